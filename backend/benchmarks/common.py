"""What the benchmark's sections share: the load generators and what a load measured."""

import asyncio
import contextlib
import json
import os
import resource
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent


@dataclass
class Load:
    """What one load run measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int] = field(default_factory=dict)
    ok_p99_ms: float | None = None  # p99 of the 2xx answers only
    generator_cpu_share: float = 0.0  # CPU seconds of the load generator per wall second
    server_cpu_s: float | None = None  # CPU seconds of the server's processes during the load
    database_cpu_s: float | None = None  # and of PostgreSQL's (every postgres process on the machine)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


class CpuMeter:
    """CPU seconds spent by a server (its process and its workers) and by PostgreSQL during a load:
    where a request's cost goes, on a machine whose cores the server, the database and the load
    generator share."""

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)

    def snapshot(self) -> dict[tuple[str, int], float]:
        server = [self.server, *self.server.children(recursive=True)]
        database = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]
        times = {}
        for kind, processes in (("server", server), ("database", database)):
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    cpu = process.cpu_times()
                    times[kind, process.pid] = cpu.user + cpu.system
        return times

    @staticmethod
    def spent(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float], kind: str) -> float:
        # Processes alive at both ends only: a connection's backend that ended took its count with it.
        return sum(after[key] - before[key] for key in before.keys() & after.keys() if key[0] == kind)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def wrk(
    url: str, *, connections: int, seconds: float, script: str = "get.lua", env: dict[str, str] | None = None
) -> tuple[dict[str, Any], Load]:
    """Drive GET `url` with wrk and one of our Lua scripts (benchmarks/*.lua, reading `env`): what
    the script printed, and the load, its 2xx counted as 200s; wrk's own CPU time comes from the
    kernel (wait4)."""
    threads = max(1, min(2, connections))
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--latency",
        "-s", str(HERE / script), url,
        env={**os.environ, **(env or {})}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    stdout, stderr = await process.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((row for row in stdout.decode().splitlines() if row.startswith("JSON")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {stdout.decode()} {stderr.decode()}")
    result = json.loads(line[4:])
    wall = result["duration_us"] / 1e6
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    load = Load(
        requests=result["requests"],
        seconds=wall,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        statuses={200: result["requests"] - result["errors"]},
        generator_cpu_share=cpu / wall,
    )
    return result, load


async def run_wrk(
    url: str, *, connections: int, seconds: float, token: str | None = None, pace_ms: int | None = None
) -> Load:
    """Drive GET `url` with wrk (get.lua).

    With `pace_ms`, each connection waits that long after an answer before its next request.
    """
    env = {**({"TOKEN": token} if token else {}), **({"PACE_MS": str(pace_ms)} if pace_ms else {})}
    _, load = await wrk(url, connections=connections, seconds=seconds, env=env)
    return load


async def run_posts(base_url: str, *, connections: int, seconds: float, make_request: Any, prefix: str) -> Load:
    """`connections` clients, each sending its next request as soon as the last one is answered."""
    latencies: dict[int, list[float]] = {}
    cpu_before = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:

        async def client(number: int) -> None:
            sent = 0
            while time.perf_counter() < deadline:
                sent += 1
                method, path, kwargs = make_request(f"{prefix}{number}n{sent}")
                t0 = time.perf_counter()
                res = await http.request(method, path, **kwargs)
                latencies.setdefault(res.status_code, []).append(time.perf_counter() - t0)

        await asyncio.gather(*(client(n) for n in range(connections)))
    wall = time.perf_counter() - started
    everything = [t for times in latencies.values() for t in times]
    ok = [t for status, times in latencies.items() if 200 <= status < 300 for t in times]
    return Load(
        requests=len(ok),
        seconds=wall,
        p50_ms=percentile(everything, 50) * 1000,
        p99_ms=percentile(everything, 99) * 1000,
        statuses={status: len(times) for status, times in sorted(latencies.items())},
        ok_p99_ms=percentile(ok, 99) * 1000,
        generator_cpu_share=(time.process_time() - cpu_before) / wall,
    )


async def take_turns(
    routes: dict[str, tuple[str, str | None]],
    *,
    connections: int,
    slice_seconds: int,
    slices: int,
    meters: dict[str, CpuMeter] | None = None,
) -> dict[str, list[Load]]:
    """wrk on each route in turn (A B A B ...), `slices` times; every slice's load, in order.

    With `meters` (by route), each slice also counts the CPU its server and PostgreSQL spent."""
    runs: dict[str, list[Load]] = {name: [] for name in routes}
    for _ in range(slices):
        for name, (url, token) in routes.items():
            meter = (meters or {}).get(name)
            before = meter.snapshot() if meter else {}
            load = await run_wrk(url, connections=connections, seconds=slice_seconds, token=token)
            if meter:
                after = meter.snapshot()
                load.server_cpu_s = meter.spent(before, after, "server")
                load.database_cpu_s = meter.spent(before, after, "database")
            runs[name].append(load)
    return runs


def combined(loads: list[Load]) -> Load:
    """Slices of one route as one load: throughput over all of them, the median slice's p50/p99."""
    return Load(
        requests=sum(load.requests for load in loads),
        seconds=sum(load.seconds for load in loads),
        p50_ms=statistics.median(load.p50_ms for load in loads),
        p99_ms=statistics.median(load.p99_ms for load in loads),
        statuses={200: sum(load.requests for load in loads)},
        generator_cpu_share=max(load.generator_cpu_share for load in loads),
        server_cpu_s=_total(load.server_cpu_s for load in loads),
        database_cpu_s=_total(load.database_cpu_s for load in loads),
    )


def _total(values: Iterable[float | None]) -> float | None:
    counted = list(values)
    return None if None in counted else sum(value for value in counted if value is not None)


async def interleaved(
    routes: dict[str, tuple[str, str | None]],
    *,
    connections: int,
    seconds: float,
    slices: int = 4,
    meters: dict[str, CpuMeter] | None = None,
) -> dict[str, Load]:
    """wrk on each route in turn, `slices` times; throughput over all slices, the median slice's p50/p99."""
    slice_seconds = max(1, int(seconds // slices))  # wrk takes whole seconds
    runs = await take_turns(routes, connections=connections, slice_seconds=slice_seconds, slices=slices, meters=meters)
    return {name: combined(loads) for name, loads in runs.items()}


def login_request(_: str) -> tuple[str, str, dict[str, Any]]:
    """The bencher's login form (the logins the benchmark loads the server with)."""
    return "POST", "/api/users/login/token/", {"data": {"username": "bencher", "password": "benchmark-pass"}}


async def log_in(base_url: str, username: str = "bencher") -> str:
    """A fresh access token of a user seeded with the benchmark's password.

    A section that follows the logins of another takes a fresh one: each login starts a session,
    and past SESSIONS_MAX_PER_USER the least recently used ones end (the seeded token's with them).
    """
    form = {"username": username, "password": "benchmark-pass"}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        res = await http.post("/api/users/login/token/", data=form)
        res.raise_for_status()
        return str(res.json()["access_token"])


def register_request(name: str) -> tuple[str, str, dict[str, Any]]:
    body = {"new_user": {"email": f"{name}@example.com", "username": name, "password": "benchmark-pass"}}
    return "POST", "/api/users/", {"json": body}


def verdict(value: float, target: tuple[str, float] | None) -> str:
    """How a figure fares against its target, `(">=" or "<=", bound)`, for a report's line."""
    if target is None:
        return ""
    op, bound = target
    met = value >= bound if op == ">=" else value <= bound
    return f"  (target {op} {bound:g}: {'met' if met else 'MISSED'})"
