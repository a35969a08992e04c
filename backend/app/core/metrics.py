"""Prometheus metrics: what Phresh counts, and where the counts of every worker process meet.

uvicorn runs a replica as one process or as several workers; a scrape reaches one of them. So that
it reports the whole replica, each worker writes its values to files in a directory shared by the
replica's workers (prometheus-client's multiprocess mode), and the scraped worker reads them all.
The directory is chosen here, before prometheus-client is first used:

- PROMETHEUS_MULTIPROC_DIR, when set (`manage.py serve` sets a fresh one per start and removes it
  on exit; any other launcher of several workers must do the same: see docs/metrics.md);
- else, in a process started by a supervisor of several workers (uvicorn --workers N, the
  reloader), a directory of that supervisor's own, named by its pid and start time under the
  temporary directory; directories of supervisors that are gone are removed as a worker starts;
- else (one process: the Docker image, the tests) no directory: the process's own memory.

Names follow Prometheus' conventions: a `phresh_` prefix, `_total` counters, `_seconds`, and
labels with few values (a route's template, never its path).
"""

import contextlib
import functools
import glob
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psutil

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SUPERVISED_DIR_PREFIX = "phresh-metrics-"


def _supervisor_dir(pid: int) -> Path | None:
    """The directory of the supervisor `pid`, named by its pid and start time (pids are reused)."""
    with contextlib.suppress(psutil.Error):
        started = int(psutil.Process(pid).create_time() * 1000)
        return Path(tempfile.gettempdir()) / f"{SUPERVISED_DIR_PREFIX}{pid}-{started}"
    return None


def _remove_abandoned_dirs(keep: Path) -> None:
    """Directories of supervisors that are no longer running (killed, or the machine restarted)."""
    for directory in keep.parent.glob(f"{SUPERVISED_DIR_PREFIX}*"):
        match = re.fullmatch(rf"{SUPERVISED_DIR_PREFIX}(\d+)-\d+", directory.name)
        if directory != keep and match and _supervisor_dir(int(match[1])) != directory:
            shutil.rmtree(directory, ignore_errors=True)


def _choose_multiprocess_dir() -> str | None:
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        os.makedirs(configured, exist_ok=True)
        return configured
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return None
    directory = _supervisor_dir(parent.pid)
    if directory is None:
        return None
    directory.mkdir(mode=0o700, exist_ok=True)
    _remove_abandoned_dirs(keep=directory)
    os.environ[MULTIPROC_ENV] = str(directory)  # read by prometheus-client as its values are made
    return str(directory)


MULTIPROCESS_DIR = _choose_multiprocess_dir()

# Imported only now: prometheus-client picks its kind of values from the environment as it loads.
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values  # noqa: E402
from prometheus_client import multiprocess as prometheus_multiprocess  # noqa: E402

if MULTIPROCESS_DIR is not None and values.ValueClass is values.MutexValue:
    # prometheus-client was loaded earlier by someone else: choose again.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]

# Phresh's own registry: the exposition shows these and nothing else in both modes (the default
# registry's process and GC metrics would describe one worker only in multiprocess mode).
REGISTRY = CollectorRegistry(auto_describe=False)

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
UNMATCHED_ROUTE = "unmatched"  # every path no route matches: one label value, never the path itself

HTTP_REQUESTS = Counter(
    "phresh_http_requests_total",
    "Requests answered, by route template, method and status class.",
    ["route", "method", "status_class"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "phresh_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
# Gauges each worker sets for itself; the replica's value is the sum over the workers alive.
HTTP_REQUESTS_IN_FLIGHT = Gauge(
    "phresh_http_requests_in_flight",
    "Requests being handled (sampled each second, and by the worker answering the scrape as it answers).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

HASHING_BUSY = Gauge(
    "phresh_hashing_busy",
    "Places taken in the password-hashing pool: jobs running or queued for a thread.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
HASHING_WAITING = Gauge(
    "phresh_hashing_waiting",
    "Requests waiting in line for a place in the password-hashing pool.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
HASHING_EXPECTED_WAIT = Gauge(
    "phresh_hashing_expected_wait_seconds",
    "The wait a newcomer would have for a hashing thread, were the line served in order (admission's figure).",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
HASHING_REFUSED = Counter(
    "phresh_hashing_refused_total",
    "Requests refused (503) because their wait for a hashing thread would have gone beyond HASH_MAX_WAIT_SECONDS.",
    registry=REGISTRY,
)
HASHING_WAIT = Histogram(
    "phresh_hashing_wait_seconds",
    "How long a request waited in line for a place in the hashing pool (0 when one was free), served or refused.",
    buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)

DB_POOL_CONNECTIONS = Gauge(
    "phresh_db_pool_connections",
    "Connections open in the database pools.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_CONNECTIONS_IN_USE = Gauge(
    "phresh_db_pool_connections_in_use",
    "Pooled connections held by a request or task.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_WAITING = Gauge(
    "phresh_db_pool_waiting",
    "Tasks waiting for a pooled connection.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

OUTBOX_OUTCOMES = ("sent", "retried", "failed", "skipped", "expired")
OUTBOX_MESSAGES = Counter(
    "phresh_outbox_messages_total",
    "Outbox messages handled by the sender, by outcome: sent, retried (a temporary failure: tried "
    "again later), failed (refused for good), skipped (no longer to be sent), expired (past its age).",
    ["outcome"],
    registry=REGISTRY,
)

SESSIONS_STARTED = Counter(
    "phresh_sessions_started_total", "Sessions started (a login or a registration).", registry=REGISTRY
)
SESSIONS_REFRESHED = Counter(
    "phresh_sessions_refreshed_total",
    "Refresh tokens exchanged for new tokens (rotated, or repeated within the grace window).",
    registry=REGISTRY,
)
SESSIONS_ENDED = Counter(
    "phresh_sessions_ended_total",
    "Sessions ended on purpose, by reason (sessions that expire or go idle are not events).",
    ["reason"],
    registry=REGISTRY,
)
REFRESH_TOKEN_REUSE = Counter(
    "phresh_refresh_token_reuse_detected_total",
    "Refresh tokens presented again after the grace window: each ended its session.",
    registry=REGISTRY,
)

RATE_LIMIT_REFUSALS = Counter(
    "phresh_rate_limit_refusals_total",
    "Attempts refused (429) by a rate limit, by the limit's kind (bucket).",
    ["kind"],
    registry=REGISTRY,
)

for _outcome in OUTBOX_OUTCOMES:  # every outcome shows, 0 until it happens
    OUTBOX_MESSAGES.labels(_outcome)


def count_outbox(outcome: str) -> None:
    OUTBOX_MESSAGES.labels(outcome).inc()


def count_sessions_ended(reason: str, ended: int = 1) -> None:
    if ended:
        SESSIONS_ENDED.labels(reason).inc(ended)


def reap_dead_workers() -> None:
    """Drop the live gauges of workers that died without saying so (killed): uvicorn starts another
    in their place, and a dead worker's last value would be summed with the living ones forever."""
    if MULTIPROCESS_DIR is None:
        return
    for path in glob.glob(os.path.join(MULTIPROCESS_DIR, "gauge_live*_*.db")):
        pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
        if not _alive(pid):
            prometheus_multiprocess.mark_process_dead(pid, MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    """Whether the process runs (a killed worker stays a zombie until uvicorn collects it: dead)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def mark_this_worker_dead() -> None:
    """A worker that stops: its live gauges leave the sums (its counters stay, as they should)."""
    if MULTIPROCESS_DIR is not None:
        prometheus_multiprocess.mark_process_dead(os.getpid(), MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]


@functools.cache  # asked at the first scrape, not at every start (most deployments never scrape)
def git_revision(directory: Path) -> str:
    """PHRESH_REVISION (set it at build time where there is no git, as in the image), else git's HEAD."""
    revision = os.environ.get("PHRESH_REVISION", "").strip()
    if revision:
        return revision[:64]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 (git from PATH, as a developer runs it)
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return "unknown"
