"""Phresh's benchmark: throughput and latency of the real service, each figure with its in-run anchor.

    python3 backend/manage.py bench [--duration 10] [--workers 1]

Starts the service (uvicorn, the real app plus a ceiling route) on a scratch database `<db>_bench`
(the embedded PostgreSQL, or DATABASE_URL's server), at the real bcrypt cost (12). Loads:
Debian's `wrk` for the cheap routes (C, event-driven: not the bottleneck), and an asyncio load
generator of its own for registration and login, which are a thousand times slower per request
and need a latency per status code. Every ratio compares two figures taken in this one run,
because these machines are shared and their absolute speed drifts.

Then the feed's section (benchmarks/feed.py): a page's latency at 10,000, 100,000 and 1,000,000
cleanings (`--skip-feed` leaves it out, `--feed-only` runs it alone).

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
from dataclasses import asdict
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
from benchmarks.before_after import chart_me_before_after, measure_me_before_after, report_me_before_after
from benchmarks.common import HERE, Load, interleaved, register_request, run_posts, run_wrk
from benchmarks.feed import chart_feed, measure_feed, report_feed
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
    "register_vs_floor": (">=", 0.95),
    "login_vs_floor": (">=", 0.95),
    "me_vs_ceiling_throughput": (">=", 0.6),
    "me_p99_vs_ceiling_p99": ("<=", 3.0),
    "stall_factor": ("<=", 8.0),
    "two_workers_vs_one_me": (">=", 1.5),
}


def login_request(_: str) -> tuple[str, str, dict[str, Any]]:
    return "POST", "/api/users/login/token/", {"data": {"username": "bencher", "password": "benchmark-pass"}}


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


async def seed(base_url: str) -> str:
    """A user with a cleaning list to read; returns their token."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        res = await http.post("/api/users/", json=register_request("bencher")[2]["json"])
        res.raise_for_status()
        token = str(res.json()["access_token"]["access_token"])
        for i in range(10):
            body = {"new_cleaning": {"name": f"room {i}", "price": 10 + i, "description": "benchmark"}}
            (
                await http.post("/api/cleanings/", json=body, headers={"Authorization": f"Bearer {token}"})
            ).raise_for_status()
    return token


async def measure(duration: float, workers: int) -> dict[str, Any]:
    database_url = sibling_database(DATABASE_URL, "bench")
    await asyncio.to_thread(prepare_database, database_url)
    cores = os.cpu_count() or 1
    figures: dict[str, Any] = {"cores": cores, "duration_s": duration, "started": datetime.now(UTC).isoformat()}

    hash_s = median_hash_seconds()
    figures["hash_ms"] = hash_s * 1000
    figures["floor_per_s"] = cores / hash_s

    server = ServerProcess(database_url, env=SERVER_ENV, module="benchmarks.ceiling_app:app", workers=workers)
    base_url = await asyncio.to_thread(server.start)
    try:
        token = await seed(base_url)
        loads: dict[str, Load] = {}
        loads["register_c8"] = await run_posts(
            base_url, connections=8, seconds=duration, make_request=register_request, prefix="reg"
        )
        loads["login_c8"] = await run_posts(
            base_url, connections=8, seconds=duration, make_request=login_request, prefix=""
        )
        # The routes compared with the ceiling take turns, a slice at a time, so that a change in
        # the machine's load during the run falls on all of them alike.
        loads.update(
            await interleaved(
                {
                    "ceiling_c32": (f"{base_url}/bench/ceiling/", None),
                    "me_c32": (f"{base_url}/api/users/me/", token),
                    "cleanings_c32": (f"{base_url}/api/cleanings/", token),
                },
                connections=32,
                seconds=duration,
            )
        )
        loads["me_c1_alone"] = await run_wrk(f"{base_url}/api/users/me/", connections=1, seconds=duration, token=token)
        loaded = await asyncio.gather(
            run_wrk(f"{base_url}/api/users/me/", connections=1, seconds=duration, token=token),
            run_posts(base_url, connections=8, seconds=duration, make_request=register_request, prefix="stall"),
        )
        loads["me_c1_under_register_c8"], loads["register_c8_alongside"] = loaded
        flood = await asyncio.gather(
            run_posts(base_url, connections=64, seconds=duration, make_request=register_request, prefix="flood"),
            run_wrk(f"{base_url}/api/users/me/", connections=1, seconds=duration, token=token),
        )
        loads["register_flood_c64"], loads["me_c1_under_flood"] = flood
        figures["rss_mb_per_worker"] = worker_rss_mb(server)
    finally:
        await asyncio.to_thread(server.stop)

    figures["loads"] = {name: {**asdict(load), "throughput": load.throughput} for name, load in loads.items()}
    figures["register_vs_floor"] = loads["register_c8"].throughput / figures["floor_per_s"]
    figures["login_vs_floor"] = loads["login_c8"].throughput / figures["floor_per_s"]
    figures["me_vs_ceiling_throughput"] = loads["me_c32"].throughput / loads["ceiling_c32"].throughput
    figures["cleanings_vs_ceiling_throughput"] = loads["cleanings_c32"].throughput / loads["ceiling_c32"].throughput
    figures["me_p99_vs_ceiling_p99"] = loads["me_c32"].p99_ms / loads["ceiling_c32"].p99_ms
    figures["cleanings_p99_vs_ceiling_p99"] = loads["cleanings_c32"].p99_ms / loads["ceiling_c32"].p99_ms
    figures["stall_factor"] = loads["me_c1_under_register_c8"].p99_ms / loads["me_c1_alone"].p99_ms
    flood_load = loads["register_flood_c64"]
    answered = sum(flood_load.statuses.values())
    figures["flood_share_503"] = flood_load.statuses.get(503, 0) / answered if answered else 0.0
    figures["flood_p99_of_201_ms"] = flood_load.ok_p99_ms
    figures["flood_me_p99_ms"] = loads["me_c1_under_flood"].p99_ms
    figures["generator_cpu_share_max"] = max(load.generator_cpu_share for load in loads.values())
    return figures


def report(figures: dict[str, Any]) -> list[str]:
    loads = figures["loads"]

    def load_line(name: str) -> str:
        load = loads[name]
        return f"{load['throughput']:.1f}/s p50 {load['p50_ms']:.1f} ms p99 {load['p99_ms']:.1f} ms"

    def verdict(key: str) -> str:
        if key not in TARGETS:
            return ""
        op, target = TARGETS[key]
        met = figures[key] >= target if op == ">=" else figures[key] <= target
        return f"  (target {op} {target:g}: {'met' if met else 'MISSED'})"

    lines = [
        f"cores: {figures['cores']}, duration per load: {figures['duration_s']:g} s",
        f"bcrypt hash (cost 12), median: {figures['hash_ms']:.0f} ms",
        f"bcrypt floor = cores / hash time: {figures['floor_per_s']:.2f}/s",
        f"register c=8: {load_line('register_c8')}",
        f"register / floor: {figures['register_vs_floor']:.2f}{verdict('register_vs_floor')}",
        f"login c=8: {load_line('login_c8')}",
        f"login / floor: {figures['login_vs_floor']:.2f}{verdict('login_vs_floor')}",
        f"ceiling route (SELECT 1) c=32: {load_line('ceiling_c32')}",
        f"GET /api/users/me/ c=32: {load_line('me_c32')}",
        f"/me / ceiling throughput: {figures['me_vs_ceiling_throughput']:.2f}{verdict('me_vs_ceiling_throughput')}",
        f"/me p99 / ceiling p99: {figures['me_p99_vs_ceiling_p99']:.2f}{verdict('me_p99_vs_ceiling_p99')}",
        f"GET /api/cleanings/ c=32: {load_line('cleanings_c32')}",
        f"/cleanings / ceiling throughput: {figures['cleanings_vs_ceiling_throughput']:.2f}",
        f"/cleanings p99 / ceiling p99: {figures['cleanings_p99_vs_ceiling_p99']:.2f}",
        f"/me c=1 alone: {load_line('me_c1_alone')}",
        f"/me c=1 under register c=8: {load_line('me_c1_under_register_c8')}",
        f"stall factor (p99 loaded / alone): {figures['stall_factor']:.2f}{verdict('stall_factor')}",
        f"register flood c=64: {loads['register_flood_c64']['statuses']} answers",
        f"flood: share answered 503: {figures['flood_share_503']:.2f}, p99 of the 201s: "
        f"{figures['flood_p99_of_201_ms']:.0f} ms, /me p99 alongside: {figures['flood_me_p99_ms']:.1f} ms",
        f"resident memory per worker at the end: {figures['rss_mb_per_worker']} MB",
        f"load generator CPU share (max over loads, 1.0 = one core): {figures['generator_cpu_share_max']:.2f}",
    ]
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

    keys = [key for key in TARGETS if key in figures]
    values = [figures[key] for key in keys]
    targets = [TARGETS[key][1] for key in keys]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.barh(keys, values, color="#4a90d9", label="measured (ratio, one run)")
    ax.scatter(targets, keys, color="#d9534f", marker="|", s=400, linewidths=3, label="target", zorder=3)
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
    parser.add_argument(
        "--compare-me-with",
        metavar="REV",
        help="run this alone: GET /api/users/me/ of git revision REV (before) and of this tree (after), taking turns",
    )
    parser.add_argument("--rounds", type=int, default=5, help="turns of each server with --compare-me-with")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("phresh: the benchmark needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 1

    RESULTS.mkdir(exist_ok=True)
    lines: list[str] = []
    figures: dict[str, Any] = {}
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
    elif not args.feed_only:
        figures = asyncio.run(measure(args.duration, args.workers))
        if not args.skip_two_workers:
            figures["two_workers_vs_one_me"] = asyncio.run(two_workers_vs_one(args.duration))
        chart(figures, RESULTS / "latest.png")
        lines += report(figures)
    if not args.skip_feed and not args.compare_me_with:
        figures["feed"] = asyncio.run(measure_feed(DATABASE_URL, args.duration))
        chart_feed(figures["feed"], RESULTS / "feed.png")
        lines += report_feed(figures["feed"])
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
            async with httpx.AsyncClient(base_url=base_url) as http:
                form = {"username": "bencher", "password": "benchmark-pass"}
                token = (await http.post("/api/users/login/token/", data=form)).json()["access_token"]
            load = await run_wrk(f"{base_url}/api/users/me/", connections=32, seconds=duration, token=token)
            throughput[workers] = load.throughput
        finally:
            await asyncio.to_thread(server.stop)
    return throughput[2] / throughput[1]


if __name__ == "__main__":
    sys.exit(main())
