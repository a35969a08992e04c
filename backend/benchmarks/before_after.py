"""`/me` before and after a change: this tree's server and another git revision's, taking turns.

    python3 backend/manage.py bench --compare-me-with REV [--rounds 5] [--duration 10]

Exports the backend of revision REV (`git archive`) into a temporary directory outside the
repository, migrates a database of its own, `<db>_bench_before`, with that revision's migrations,
and serves it from there with this virtualenv; this tree's server runs beside it on `<db>_bench`.
Each gets a user, who logs in; then GET /api/users/me/ is loaded on one server, then the other
(A B A B ...), `--rounds` times, at the concurrency of the main /me figure (wrk, c=32), so that a
change in the machine's load during the run falls on both alike. Both servers are warmed up first
(not counted). Reports, for before and after: requests per second over all turns, the median
turn's p50 and p99, and after / before for each, per round too.
"""

import asyncio
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx
from databases import DatabaseURL

from app.core.config import BACKEND_DIR
from app.db.admin import recreate_database, sibling_database
from benchmarks.common import Load, combined, register_request, run_wrk, take_turns
from scripts.live_server import ServerProcess, prepare_database
from scripts.ports import free_port

REPOSITORY_DIR = BACKEND_DIR.parent
CONNECTIONS = 32  # as the main run's GET /api/users/me/ c=32
WARM_UP_SECONDS = 2
ME = "/api/users/me/"


def git(*args: str) -> str:
    executable = shutil.which("git")
    if executable is None:
        raise RuntimeError("comparing with a revision needs git")
    done = subprocess.run([executable, "-C", str(REPOSITORY_DIR), *args], capture_output=True, check=True)
    return done.stdout.decode().strip()


def this_tree() -> dict[str, Any]:
    """What "after" runs: the working tree, which may differ from HEAD."""
    changed = git("status", "--porcelain", "--", "backend/app")
    return {"revision": git("rev-parse", "HEAD"), "working_tree": True, "uncommitted_app_changes": bool(changed)}


def export_backend(revision: str, into: Path) -> str:
    """Write `revision`'s backend/ under `into` (never touching this working tree); its full hash."""
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    executable = shutil.which("git")
    assert executable is not None  # git() found it a moment ago
    archive = subprocess.run(
        [executable, "-C", str(REPOSITORY_DIR), "archive", "--format=tar", commit, "backend"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


def migrate_exported(backend_dir: Path, url: DatabaseURL) -> None:
    """An empty database at the exported revision's newest migration, by its own Alembic scripts."""
    asyncio.run(recreate_database(url))
    env = {**os.environ, "DATABASE_URL": str(url), "PHRESH_ENV_FILE": os.devnull}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=backend_dir, env=env, capture_output=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrating the exported revision failed: {done.stderr.decode()}")


class ExportedServer(ServerProcess):
    """A ServerProcess that serves another checkout's backend: uvicorn imports `app` from its directory."""

    def __init__(self, backend_dir: Path, database_url: DatabaseURL, *, env: dict[str, str], workers: int) -> None:
        super().__init__(database_url, env=env, workers=workers)
        self.backend_dir = backend_dir

    def start(self, *, wait_until_ready: bool = True, timeout: float = 60) -> str:
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", self.module, "--host", "127.0.0.1", "--port", str(port)]
        command += ["--no-access-log", "--workers", str(self.workers)]
        self.process = subprocess.Popen(
            command, cwd=self.backend_dir, env=self.env, stdout=self.output, stderr=self.output
        )
        self.base_url = f"http://127.0.0.1:{port}"
        if wait_until_ready:
            self.wait_until_ready(timeout=timeout)
        return self.base_url


async def seeded_token(base_url: str) -> str:
    """Register the bencher, log in (the token as any client gets it), and check /me answers."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        (await http.post("/api/users/", json=register_request("bencher")[2]["json"])).raise_for_status()
        res = await http.post("/api/users/login/token/", data={"username": "bencher", "password": "benchmark-pass"})
        res.raise_for_status()
        token = str(res.json()["access_token"])
        (await http.get(ME, headers={"Authorization": f"Bearer {token}"})).raise_for_status()
    return token


def errors(load: Load) -> int:
    """Answers that were not 2xx (or never came): a refused token would look like a fast /me."""
    return load.requests - load.statuses.get(200, 0)


def load_figures(load: Load) -> dict[str, float]:
    return {"throughput": load.throughput, "p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "requests": load.requests}


def ratios(before: Load, after: Load) -> dict[str, float]:
    return {
        "throughput": after.throughput / before.throughput,
        "p50_ms": after.p50_ms / before.p50_ms,
        "p99_ms": after.p99_ms / before.p99_ms,
    }


async def measure_me_before_after(
    database_url: DatabaseURL, *, revision: str, duration: float, rounds: int, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    after_tree = this_tree()
    with tempfile.TemporaryDirectory(prefix="phresh-bench-before-") as checkout:
        commit = await asyncio.to_thread(export_backend, revision, Path(checkout))
        backend_dir = Path(checkout) / "backend"
        before_url = sibling_database(database_url, "bench_before")
        after_url = sibling_database(database_url, "bench")
        await asyncio.to_thread(migrate_exported, backend_dir, before_url)
        await asyncio.to_thread(prepare_database, after_url)

        before = ExportedServer(backend_dir, before_url, env=env, workers=workers)
        after = ServerProcess(after_url, env=env, workers=workers)
        try:
            before_base = await asyncio.to_thread(before.start)
            after_base = await asyncio.to_thread(after.start)
            routes: dict[str, tuple[str, str | None]] = {
                "before": (before_base + ME, await seeded_token(before_base)),
                "after": (after_base + ME, await seeded_token(after_base)),
            }
            for url, token in routes.values():
                await run_wrk(url, connections=CONNECTIONS, seconds=WARM_UP_SECONDS, token=token)
            turns = await take_turns(
                routes, connections=CONNECTIONS, slice_seconds=max(1, round(duration)), slices=rounds
            )
        finally:
            await asyncio.to_thread(before.stop)
            await asyncio.to_thread(after.stop)

    refused = {name: sum(errors(load) for load in loads) for name, loads in turns.items()}
    if any(refused.values()):
        raise RuntimeError(f"/me answered with errors during the turns: {refused}")
    totals = {name: combined(loads) for name, loads in turns.items()}
    return {
        "route": f"GET {ME}",
        "connections": CONNECTIONS,
        "workers": workers,
        "turn_s": max(1, round(duration)),
        "rounds": rounds,
        "before": {"revision": commit, "asked_for": revision, **load_figures(totals["before"])},
        "after": {**after_tree, **load_figures(totals["after"])},
        "after_vs_before": ratios(totals["before"], totals["after"]),
        "per_round": [
            {
                "before": load_figures(before_load),
                "after": load_figures(after_load),
                "after_vs_before": ratios(before_load, after_load),
            }
            for before_load, after_load in zip(turns["before"], turns["after"], strict=True)
        ],
        "generator_cpu_share_max": max(load.generator_cpu_share for loads in turns.values() for load in loads),
    }


def report_me_before_after(compared: dict[str, Any]) -> list[str]:
    before, after, ratio = compared["before"], compared["after"], compared["after_vs_before"]
    changes = ", with uncommitted changes in backend/app" if after["uncommitted_app_changes"] else ""
    after_name = f"this tree (HEAD {after['revision'][:7]}{changes})"

    def figures(side: dict[str, Any]) -> str:
        return f"{side['throughput']:.0f}/s p50 {side['p50_ms']:.1f} ms p99 {side['p99_ms']:.1f} ms"

    per_round = [row["after_vs_before"]["throughput"] for row in compared["per_round"]]
    return [
        f"GET /api/users/me/ c={compared['connections']}, before and after taking turns, "
        f"{compared['rounds']} rounds of {compared['turn_s']} s each:",
        f"  before ({before['asked_for']} = {before['revision'][:7]}): {figures(before)}",
        f"  after ({after_name}): {figures(after)}",
        f"  after / before: throughput {ratio['throughput']:.3f}, p50 {ratio['p50_ms']:.3f}, p99 {ratio['p99_ms']:.3f}",
        f"  after / before throughput, round by round: {', '.join(f'{r:.3f}' for r in per_round)}",
        f"  load generator CPU share (max over turns, 1.0 = one core): {compared['generator_cpu_share_max']:.2f}",
    ]


def chart_me_before_after(compared: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"before": "#a6cbe8", "after": "#1f4e79"}
    labels = {"before": f"before ({compared['before']['revision'][:7]})", "after": "after (this tree)"}
    fig, (turns_ax, latency_ax) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    rounds = range(1, len(compared["per_round"]) + 1)
    for offset, side in ((-0.2, "before"), (0.2, "after")):
        values = [row[side]["throughput"] for row in compared["per_round"]]
        turns_ax.bar([r + offset for r in rounds], values, 0.4, color=colors[side], label=labels[side])
    turns_ax.set_xticks(list(rounds), [f"round {r}" for r in rounds])
    turns_ax.set_ylabel("requests/s (each turn)")
    turns_ax.legend(loc="lower right")
    stats = ("p50_ms", "p99_ms")
    for offset, side in ((-0.2, "before"), (0.2, "after")):
        values = [compared[side][stat] for stat in stats]
        bars = latency_ax.bar([i + offset for i in range(len(stats))], values, 0.4, color=colors[side])
        for bar, value in zip(bars, values, strict=True):
            latency_ax.text(
                bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{value:.1f}", ha="center", va="bottom"
            )
    latency_ax.set_xticks(range(len(stats)), ["p50 (median turn)", "p99 (median turn)"])
    latency_ax.set_ylabel("latency, ms")
    ratio = compared["after_vs_before"]
    fig.suptitle(
        f"GET /api/users/me/ c={compared['connections']}, before and after taking turns: after / before "
        f"throughput {ratio['throughput']:.2f}, p50 {ratio['p50_ms']:.2f}, p99 {ratio['p99_ms']:.2f}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
