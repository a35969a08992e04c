"""Phresh's benchmark: throughput and latency of the real service, each figure with its in-run anchor.

    python3 backend/manage.py bench [--duration 10] [--workers 1]

Starts the service (uvicorn, the real app plus a ceiling route) on a scratch database `<db>_bench`
(the embedded PostgreSQL, or DATABASE_URL's server), at the real bcrypt cost (12). Loads:
Debian's `wrk` for the cheap routes (C, event-driven: not the bottleneck), and an asyncio load
generator of its own for registration and login, which are a thousand times slower per request
and need a latency per status code. Every ratio compares two figures taken in this one run,
because these machines are shared and their absolute speed drifts.

The hot read routes (`/me`, a cleaning by id, the offers of a cleaning, the first feed page, the
caller's cleanings) take turns with two ceilings: the `databases` one above and the real one, a
separate minimal app (benchmarks/asyncpg_ceiling_app.py, its own uvicorn process with the same
options, on the same database) whose one route runs `SELECT 1` straight through an asyncpg pool.
`--hot-routes-only` runs that section alone (no registration, login, stall or flood loads, no
feed section), for quick turns while optimising; `--flood-only` likewise runs the floods alone, and
`--admission-only` the admission loads (benchmarks/admission.py: register and login at 8 and 12
clients, logins after an abandoned burst of registrations).

Then the floods (benchmarks/flood.py): 64 clients logging in, then registering, as fast as they
are answered, beside a paced /me probe: goodput against the bcrypt floor, the p99 of the answered
ones, /me's p99 against its idle p99, and how soon a login succeeds once the flood ends.

Then the feed's section (benchmarks/feed.py): a page's latency at 10,000, 100,000 and 1,000,000
cleanings (`--skip-feed` leaves it out, `--feed-only` runs it alone). Then the search's
(benchmarks/search.py): each sort's first and deep page at the same sizes (`--skip-search`,
`--search-only`).

`--metrics-cost` runs one thing alone instead (benchmarks/metrics_cost.py): GET /api/users/me/
with metrics on (METRICS_TOKEN set, multiprocess mode as `serve` runs it) and off, two servers
loaded in turns, `--rounds` turns of `--duration` seconds each; on / off for requests/s.

`--compare-me-with REV` runs one thing alone instead (benchmarks/before_after.py): GET /api/users/me/
of git revision REV and of this tree, served side by side and loaded in turns, `--rounds` turns of
`--duration` seconds each; after / before for requests/s, p50 and p99.

Prints one line per figure, and writes benchmarks/results/latest.json, latest.png and feed.png
(me-before-after.png for the comparison).
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ["SECRET_KEY"] = secrets.token_hex(32)  # a scratch server, a scratch key
os.environ["BCRYPT_ROUNDS"] = "12"  # the real cost, whatever the caller's environment says

import httpx
import psutil

from app.core.config import DATABASE_URL
from app.db.admin import sibling_database
from app.services import auth_service
from benchmarks import common
from benchmarks.admission import TARGETS as ADMISSION_TARGETS
from benchmarks.admission import measure_admission, report_admission
from benchmarks.before_after import chart_me_before_after, measure_me_before_after, report_me_before_after
from benchmarks.common import (
    HERE,
    CpuMeter,
    Load,
    interleaved,
    log_in,
    register_request,
    run_posts,
    run_wrk,
)
from benchmarks.feed import chart_feed, measure_feed, report_feed
from benchmarks.flood import TARGETS as FLOOD_TARGETS
from benchmarks.flood import measure_flood, report_flood
from benchmarks.metrics_cost import measure_metrics_cost, report_metrics_cost
from benchmarks.polling import measure_polling, polling_figures
from benchmarks.search import measure_search, report_search
from scripts.live_server import ServerProcess, prepare_database

RESULTS = HERE / "results"

# Limits meant for people, not for a load generator.
SERVER_ENV = {
    "BCRYPT_ROUNDS": "12",
    "LOGIN_MAX_FAILURES_PER_ACCOUNT": "100000000",
    "LOGIN_MAX_FAILURES_PER_ADDRESS": "100000000",
    "REGISTER_MAX_PER_ADDRESS": "100000000",
}

TARGETS = {
    **ADMISSION_TARGETS,
    "me_vs_ceiling_throughput": (">=", 0.6),
    "me_p99_vs_ceiling_p99": ("<=", 3.0),
    "stall_factor": ("<=", 8.0),
    "two_workers_vs_one_me": (">=", 1.5),
    "me_vs_asyncpg_throughput": (">=", 0.8),
    "me_p99_vs_asyncpg_p99": ("<=", 3.0),
    "cleaning_vs_asyncpg": (">=", 0.6),
    "offers_vs_asyncpg": (">=", 0.5),
    "feed_vs_asyncpg": (">=", 0.5),
    **FLOOD_TARGETS,
}
# A flood runs at least this long, so that its p99 figures rest on a few hundred answers.
FLOOD_MIN_SECONDS = 15.0

# The hot read routes, each as a share of the asyncpg ceiling's throughput: (figure, load, label).
HOT_ROUTES = (
    ("ceiling_vs_asyncpg", "ceiling_c32", "GET /bench/ceiling/ (SELECT 1 through databases)"),
    ("me_vs_asyncpg_throughput", "me_c32", "GET /api/users/me/"),
    ("cleaning_vs_asyncpg", "cleaning_c32", "GET /api/cleanings/{id}/"),
    ("offers_vs_asyncpg", "offers_c32", "GET /api/cleanings/{id}/offers/ (3 offers)"),
    ("feed_vs_asyncpg", "feed_c32", "GET /api/feed/cleanings/ (first page, 20 items)"),
    ("cleanings_vs_asyncpg", "cleanings_c32", "GET /api/cleanings/ (10 cleanings)"),
)
# Users who each post cleanings (so that the feed's first page is full) and offer to do the
# bencher's first cleaning (so that its list of offers is not empty).
OFFERERS = 3
CLEANINGS_PER_OFFERER = 4


def median_hash_seconds(samples: int = 7) -> float:
    salt = auth_service.generate_salt()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        auth_service.hash_password(password="benchmark-pass", salt=salt)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker_rss_mb(server: ServerProcess) -> list[float]:
    assert server.process is not None
    parent = psutil.Process(server.process.pid)
    workers = [child for child in parent.children(recursive=True) if "python" in child.name().lower()]
    return [round(p.memory_info().rss / 2**20, 1) for p in (workers or [parent])]


@dataclass(frozen=True)
class Seeded:
    cleaning_id: int  # the bencher's first cleaning, with an offer from each offerer
    prober_token: str  # of a user nobody else logs in as: the /me probes beside the loads


async def seed(base_url: str) -> Seeded:
    """A user with a cleaning list to read, and others who post cleanings and offer to do theirs."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:

        async def register(name: str) -> dict[str, str]:
            res = await http.post("/api/users/", json=register_request(name)[2]["json"])
            res.raise_for_status()
            return {"Authorization": f"Bearer {res.json()['access_token']['access_token']}"}

        async def post_cleaning(headers: dict[str, str], name: str, price: int) -> int:
            body = {"new_cleaning": {"name": name, "price": price, "description": "benchmark"}}
            res = await http.post("/api/cleanings/", json=body, headers=headers)
            res.raise_for_status()
            return int(res.json()["id"])

        bencher = await register("bencher")
        ids = [await post_cleaning(bencher, f"room {i}", 10 + i) for i in range(10)]
        for n in range(OFFERERS):
            offerer = await register(f"offerer{n}")
            for i in range(CLEANINGS_PER_OFFERER):
                await post_cleaning(offerer, f"room {i} of offerer {n}", 20 + i)
            (await http.post(f"/api/cleanings/{ids[0]}/offers/", headers=offerer)).raise_for_status()
        prober = await register("prober")
    return Seeded(
        cleaning_id=ids[0],
        prober_token=prober["Authorization"].removeprefix("Bearer "),
    )


async def measure_hot_routes(
    server: ServerProcess, asyncpg_ceiling: ServerProcess, seeded: Seeded, token: str, duration: float
) -> dict[str, Load]:
    """The hot read routes and both ceilings at c=32, taking turns a slice at a time, so that a
    change in the machine's load during the run falls on all of them alike; with the CPU each
    request cost its server and PostgreSQL."""
    base_url, asyncpg_ceiling_url = server.base_url, asyncpg_ceiling.base_url
    cleaning = f"{base_url}/api/cleanings/{seeded.cleaning_id}/"
    routes = {
        "asyncpg_ceiling_c32": (f"{asyncpg_ceiling_url}/bench/asyncpg-ceiling/", None),
        "ceiling_c32": (f"{base_url}/bench/ceiling/", None),
        "me_c32": (f"{base_url}/api/users/me/", token),
        "cleaning_c32": (cleaning, token),
        "offers_c32": (f"{cleaning}offers/", token),
        "feed_c32": (f"{base_url}/api/feed/cleanings/", token),
        "cleanings_c32": (f"{base_url}/api/cleanings/", token),
    }
    # wrk counts any answer: make sure each route answers 200 with what it should hold.
    async with httpx.AsyncClient(timeout=60) as http:
        for name, (url, route_token) in routes.items():
            headers = {"Authorization": f"Bearer {route_token}"} if route_token else {}
            res = await http.get(url, headers=headers)
            res.raise_for_status()
            expected = {"offers_c32": OFFERERS, "feed_c32": 20}.get(name)
            if expected is not None and len(res.json()) != expected:
                raise RuntimeError(f"{url} answered {len(res.json())} items, not {expected}")
    assert server.process is not None and asyncpg_ceiling.process is not None
    service, ceiling = CpuMeter(server.process.pid), CpuMeter(asyncpg_ceiling.process.pid)
    meters = {name: ceiling if name == "asyncpg_ceiling_c32" else service for name in routes}
    return await interleaved(routes, connections=32, seconds=duration, meters=meters)


def hot_route_figures(loads: dict[str, Load]) -> dict[str, float]:
    """Ratios to the asyncpg ceiling, and (as before it existed) to the `databases` ceiling."""
    asyncpg_ceiling, ceiling = loads["asyncpg_ceiling_c32"], loads["ceiling_c32"]
    figures = {key: loads[load].throughput / asyncpg_ceiling.throughput for key, load, _ in HOT_ROUTES}
    figures["me_p99_vs_asyncpg_p99"] = loads["me_c32"].p99_ms / asyncpg_ceiling.p99_ms
    figures["me_vs_ceiling_throughput"] = loads["me_c32"].throughput / ceiling.throughput
    figures["cleanings_vs_ceiling_throughput"] = loads["cleanings_c32"].throughput / ceiling.throughput
    figures["me_p99_vs_ceiling_p99"] = loads["me_c32"].p99_ms / ceiling.p99_ms
    figures["cleanings_p99_vs_ceiling_p99"] = loads["cleanings_c32"].p99_ms / ceiling.p99_ms
    return figures


# The sections of the main run, in order; `--hot-routes-only` and `--flood-only` pick one.
SECTIONS = ("posts", "hot_routes", "stall", "flood")


async def measure(duration: float, workers: int, *, sections: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
    database_url = sibling_database(DATABASE_URL, "bench")
    await asyncio.to_thread(prepare_database, database_url)
    cores = os.cpu_count() or 1
    figures: dict[str, Any] = {"cores": cores, "duration_s": duration, "started": datetime.now(UTC).isoformat()}

    if "posts" in sections or "flood" in sections:
        hash_s = median_hash_seconds()
        figures["hash_ms"] = hash_s * 1000
        figures["floor_per_s"] = cores / hash_s

    server = ServerProcess(database_url, env=SERVER_ENV, module="benchmarks.ceiling_app:app", workers=workers)
    asyncpg_ceiling = ServerProcess(
        database_url, env=SERVER_ENV, module="benchmarks.asyncpg_ceiling_app:app", workers=workers
    )
    base_url = await asyncio.to_thread(server.start)
    try:
        await asyncio.to_thread(asyncpg_ceiling.start)
        seeded = await seed(base_url)
        loads: dict[str, Load] = {}
        if "posts" in sections:
            admission, admission_loads = await measure_admission(
                base_url, seconds=duration, floor_per_s=figures["floor_per_s"], hash_s=hash_s
            )
            figures.update(admission)
            loads.update(admission_loads)
        if "hot_routes" in sections:
            token = await log_in(base_url)  # the seeded session ended if the logins above made 100 more
            loads.update(await measure_hot_routes(server, asyncpg_ceiling, seeded, token, duration))
            assert server.process is not None and asyncpg_ceiling.process is not None
            polls = measure_polling(
                base_url,
                asyncpg_ceiling.base_url,
                token,
                duration=duration,
                server_pid=server.process.pid,
                ceiling_pid=asyncpg_ceiling.process.pid,
            )
            loads.update(await polls)  # the feed polled with its ETag: 304s (benchmarks/polling.py)
        if "stall" in sections:
            me = f"{base_url}/api/users/me/"
            probe = seeded.prober_token
            loads["me_c1_alone"] = await run_wrk(me, connections=1, seconds=duration, token=probe)
            loaded = await asyncio.gather(
                run_wrk(me, connections=1, seconds=duration, token=probe),
                run_posts(base_url, connections=8, seconds=duration, make_request=register_request, prefix="stall"),
            )
            loads["me_c1_under_register_c8"], loads["register_c8_alongside"] = loaded
        if "flood" in sections:
            flood_seconds = max(duration, FLOOD_MIN_SECONDS)
            for kind in ("login", "register"):
                figures[f"{kind}_flood"] = flood = await measure_flood(
                    base_url, seeded.prober_token, kind=kind, seconds=flood_seconds, floor_per_s=figures["floor_per_s"]
                )
                figures.update({key: flood[key] for key in FLOOD_TARGETS if key in flood})
        figures["rss_mb_per_worker"] = worker_rss_mb(server)
    finally:
        await asyncio.to_thread(asyncpg_ceiling.stop)
        await asyncio.to_thread(server.stop)

    figures["loads"] = {name: {**asdict(load), "throughput": load.throughput} for name, load in loads.items()}
    if loads:
        figures["generator_cpu_share_max"] = max(load.generator_cpu_share for load in loads.values())
    if "hot_routes" in sections:
        figures.update(hot_route_figures(loads))
        figures.update(polling_figures(loads))
    if "stall" in sections:
        figures["stall_factor"] = loads["me_c1_under_register_c8"].p99_ms / loads["me_c1_alone"].p99_ms
    return figures


def report(figures: dict[str, Any]) -> list[str]:
    loads = figures["loads"]

    def load_line(name: str) -> str:
        load = loads[name]
        return f"{load['throughput']:.1f}/s p50 {load['p50_ms']:.1f} ms p99 {load['p99_ms']:.1f} ms"

    def verdict(key: str) -> str:
        return common.verdict(figures[key], TARGETS.get(key))

    def cpu_line(name: str) -> str:
        load = loads[name]
        server, database = load.get("server_cpu_s"), load.get("database_cpu_s")
        if server is None or database is None or not load["requests"]:
            return "not measured"
        return f"{server / load['requests'] * 1e6:.0f} / {database / load['requests'] * 1e6:.0f}"

    lines = [f"cores: {figures['cores']}, duration per load: {figures['duration_s']:g} s"]
    if "register_c8" in loads:
        lines += [
            f"bcrypt hash (cost 12), median: {figures['hash_ms']:.0f} ms",
            f"bcrypt floor = cores / hash time: {figures['floor_per_s']:.2f}/s",
        ]
        lines += report_admission(figures, loads)
    if "me_c32" in loads:
        lines += [
            f"ceiling route (SELECT 1 through databases) c=32: {load_line('ceiling_c32')}",
            f"GET /api/users/me/ c=32: {load_line('me_c32')}",
            f"/me / ceiling throughput: {figures['me_vs_ceiling_throughput']:.2f}{verdict('me_vs_ceiling_throughput')}",
            f"/me p99 / ceiling p99: {figures['me_p99_vs_ceiling_p99']:.2f}{verdict('me_p99_vs_ceiling_p99')}",
            f"GET /api/cleanings/ c=32: {load_line('cleanings_c32')}",
            f"/cleanings / ceiling throughput: {figures['cleanings_vs_ceiling_throughput']:.2f}",
            f"/cleanings p99 / ceiling p99: {figures['cleanings_p99_vs_ceiling_p99']:.2f}",
            f"asyncpg ceiling (minimal app, SELECT 1 through an asyncpg pool) c=32: {load_line('asyncpg_ceiling_c32')}",
        ]
        for key, load, label in HOT_ROUTES:
            lines.append(f"{label} c=32: {load_line(load)}: {figures[key]:.2f} of the asyncpg ceiling{verdict(key)}")
        lines.append("CPU per request (server process / PostgreSQL), in microseconds:")
        for name in ("asyncpg_ceiling_c32", *(load for _, load, _ in HOT_ROUTES)):
            lines.append(f"  {name}: {cpu_line(name)}")
        lines.append(
            f"/me p99 / asyncpg ceiling p99: {figures['me_p99_vs_asyncpg_p99']:.2f}{verdict('me_p99_vs_asyncpg_p99')}"
        )
    if "feed_304_c32" in loads:
        lines += [
            f"asyncpg ceiling, in the polls' turns, c=32: {load_line('asyncpg_ceiling_poll_c32')}",
            f"GET /api/feed/cleanings/ polled with its ETag (all 304) c=32: {load_line('feed_304_c32')}:"
            f" {figures['feed_304_vs_asyncpg']:.2f} of the asyncpg ceiling",
            f"  CPU per 304 (server / PostgreSQL, µs): {cpu_line('feed_304_c32')}",
        ]
    if "me_c1_alone" in loads:
        lines += [
            f"/me c=1 alone: {load_line('me_c1_alone')}",
            f"/me c=1 under register c=8: {load_line('me_c1_under_register_c8')}",
            f"stall factor (p99 loaded / alone): {figures['stall_factor']:.2f}{verdict('stall_factor')}",
        ]
    if "login_flood" in figures:
        if "register_c8" not in loads:
            lines.append(
                f"bcrypt floor = cores / hash time ({figures['hash_ms']:.0f} ms): {figures['floor_per_s']:.2f}/s"
            )
        lines += report_flood("login", figures["login_flood"]) + report_flood("register", figures["register_flood"])
    lines.append(f"resident memory per worker at the end: {figures['rss_mb_per_worker']} MB")
    if "generator_cpu_share_max" in figures:
        lines.append(
            f"load generator CPU share (max over loads, 1.0 = one core): {figures['generator_cpu_share_max']:.2f}"
        )
    if "two_workers_vs_one_me" in figures:
        lines.append(
            f"/me c=32 with 2 workers / 1 worker: {figures['two_workers_vs_one_me']:.2f}"
            f"{verdict('two_workers_vs_one_me')}"
        )
    return lines


def chart(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Every ratio with a target, then the hot routes' ratios that have none (no target mark).
    keys = [key for key in TARGETS if key in figures]
    keys += [key for key, _, _ in HOT_ROUTES if key in figures and key not in TARGETS]
    values = [figures[key] for key in keys]
    targeted = [key for key in keys if key in TARGETS]
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.35 * len(keys)))
    bars = ax.barh(keys, values, color="#4a90d9", label="measured (ratio, one run)")
    ax.scatter(
        [TARGETS[key][1] for key in targeted],
        targeted,
        color="#d9534f",
        marker="|",
        s=400,
        linewidths=3,
        label="target",
        zorder=3,
    )
    for bar, value in zip(bars, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.2f}", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("ratio (see docs/performance.md: higher is better, except p99 ratio and stall factor)")
    ax.set_title(f"Phresh benchmark, {figures['cores']} cores, {figures['started'][:10]}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per load (per turn with --compare-me-with)"
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for the main run")
    parser.add_argument("--skip-two-workers", action="store_true", help="skip the 2-worker /me comparison")
    parser.add_argument("--skip-feed", action="store_true", help="skip the feed section (it fills 1M cleanings)")
    parser.add_argument("--feed-only", action="store_true", help="run the feed section alone")
    parser.add_argument("--skip-search", action="store_true", help="skip the search section (it fills 1M cleanings)")
    parser.add_argument("--search-only", action="store_true", help="run the search section alone")
    parser.add_argument(
        "--hot-routes-only",
        action="store_true",
        help="run the hot read routes and both ceilings alone (writes hot-routes.json and hot-routes.png)",
    )
    parser.add_argument(
        "--admission-only",
        action="store_true",
        help="run the admission loads alone: register and login at c=8 and c=12, logins after a burst "
        "(writes admission.json and admission.png)",
    )
    parser.add_argument(
        "--flood-only",
        action="store_true",
        help="run the login and register floods alone (writes flood.json and flood.png)",
    )
    parser.add_argument(
        "--compare-me-with",
        metavar="REV",
        help="run this alone: GET /api/users/me/ of git revision REV (before) and of this tree (after), taking turns",
    )
    parser.add_argument(
        "--metrics-cost",
        action="store_true",
        help="run this alone: GET /api/users/me/ with metrics on and off, two servers taking turns",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="turns of each server with --compare-me-with or --metrics-cost"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("phresh: the benchmark needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 1

    RESULTS.mkdir(exist_ok=True)
    lines: list[str] = []
    figures: dict[str, Any] = {}
    if args.metrics_cost:
        figures = {"cores": os.cpu_count() or 1, "started": datetime.now(UTC).isoformat()}
        figures["metrics_cost"] = asyncio.run(
            measure_metrics_cost(
                sibling_database(DATABASE_URL, "bench"),
                duration=args.duration,
                rounds=args.rounds,
                workers=args.workers,
                env=SERVER_ENV,
            )
        )
        (RESULTS / "metrics-cost.json").write_text(json.dumps(figures, indent=2) + "\n")
        for line in report_metrics_cost(figures["metrics_cost"]):
            print(line)
        print(f"wrote {RESULTS / 'metrics-cost.json'}")
        return 0
    if args.compare_me_with:
        figures = {"cores": os.cpu_count() or 1, "started": datetime.now(UTC).isoformat()}
        figures["me_before_after"] = asyncio.run(
            measure_me_before_after(
                DATABASE_URL,
                revision=args.compare_me_with,
                duration=args.duration,
                rounds=args.rounds,
                workers=args.workers,
                env=SERVER_ENV,
            )
        )
        chart_me_before_after(figures["me_before_after"], RESULTS / "me-before-after.png")
        lines += report_me_before_after(figures["me_before_after"])
    elif args.hot_routes_only or args.flood_only or args.admission_only:
        name, section = (
            ("hot-routes", "hot_routes")
            if args.hot_routes_only
            else ("flood", "flood")
            if args.flood_only
            else ("admission", "posts")
        )
        figures = asyncio.run(measure(args.duration, args.workers, sections=(section,)))
        chart(figures, RESULTS / f"{name}.png")
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
        for line in report(figures):
            print(line)
        print(f"wrote {RESULTS / f'{name}.json'} and {RESULTS / f'{name}.png'}")
        return 0
    elif not (args.feed_only or args.search_only):
        figures = asyncio.run(measure(args.duration, args.workers))
        if not args.skip_two_workers:
            figures["two_workers_vs_one_me"] = asyncio.run(two_workers_vs_one(args.duration))
        chart(figures, RESULTS / "latest.png")
        lines += report(figures)
    if not args.skip_feed and not args.compare_me_with and not args.search_only:
        figures["feed"] = asyncio.run(measure_feed(DATABASE_URL, args.duration))
        chart_feed(figures["feed"], RESULTS / "feed.png")
        lines += report_feed(figures["feed"])
    if not args.skip_search and not args.compare_me_with and not args.feed_only:
        figures["search"] = asyncio.run(measure_search(DATABASE_URL, args.duration))
        lines += report_search(figures["search"])
    (RESULTS / "latest.json").write_text(json.dumps(figures, indent=2) + "\n")
    for line in lines:
        print(line)
    print(f"wrote {RESULTS / 'latest.json'} and the charts in {RESULTS}")
    return 0


async def two_workers_vs_one(duration: float) -> float:
    database_url = sibling_database(DATABASE_URL, "bench")
    throughput = {}
    for workers in (1, 2):
        server = ServerProcess(database_url, env=SERVER_ENV, workers=workers)
        base_url = await asyncio.to_thread(server.start)
        try:
            token = await log_in(base_url)
            load = await run_wrk(f"{base_url}/api/users/me/", connections=32, seconds=duration, token=token)
            throughput[workers] = load.throughput
        finally:
            await asyncio.to_thread(server.stop)
    return throughput[2] / throughput[1]


if __name__ == "__main__":
    sys.exit(main())
