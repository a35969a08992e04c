"""The feed polled (issue 22): conditional GETs of the first page that find nothing new.

A client polling the feed sends the ETag of the page it has in If-None-Match and gets 304 with no
body while nothing changed: one statement (the tag's), no JSON written. Measured with wrk at c=32,
in turns with the asyncpg ceiling (benchmarks/asyncpg_ceiling_app.py), a slice at a time, as the
hot routes are: the figure is 304s per second over the ceiling's requests per second, both from
this run. Every answer is checked to be a 304 by its size (a 304 is a few hundred bytes of
headers; the full page is about 15 kB), and by a conditional GET before and after.
"""

import statistics

import httpx

from benchmarks.common import CpuMeter, Load, run_wrk, wrk

FEED = "/api/feed/cleanings/"
# A 304's headers (ETag, Cache-Control, the security headers, the request id) are about 500 bytes.
MAX_304_BYTES = 1500


async def conditional_feed_get(base_url: str, token: str, etag: str) -> int:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        res = await http.get(FEED, headers={"Authorization": f"Bearer {token}", "If-None-Match": etag})
        return res.status_code


async def run_polls(url: str, *, token: str, etag: str, connections: int, seconds: int) -> Load:
    """wrk sending the conditional GET back to back on `connections` connections (poll.lua)."""
    env = {"TOKEN": token, "IF_NONE_MATCH": etag}
    result, load = await wrk(url, connections=connections, seconds=seconds, script="poll.lua", env=env)
    if result["errors"] or result["bytes"] > MAX_304_BYTES * result["requests"]:
        raise RuntimeError(f"the polls were not all answered 304: {result}")
    load.statuses = {304: result["requests"]}
    return load


async def measure_polling(
    base_url: str,
    asyncpg_ceiling_url: str,
    token: str,
    *,
    duration: float,
    server_pid: int | None = None,
    ceiling_pid: int | None = None,
    slices: int = 4,
) -> dict[str, Load]:
    """The feed's first page polled with its current ETag, and the asyncpg ceiling, at c=32 in
    turns: {"feed_304_c32": ..., "asyncpg_ceiling_poll_c32": ...}. With the servers' pids, each
    load also counts the CPU its server and PostgreSQL spent."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        first = await http.get(FEED, headers={"Authorization": f"Bearer {token}"})
        first.raise_for_status()
        etag = first.headers["etag"]
    if await conditional_feed_get(base_url, token, etag) != 304:
        raise RuntimeError("the feed did not answer its own ETag with 304")
    slice_seconds = max(1, int(duration // slices))
    meters = {
        "feed_304_c32": CpuMeter(server_pid) if server_pid else None,
        "asyncpg_ceiling_poll_c32": CpuMeter(ceiling_pid) if ceiling_pid else None,
    }
    runs: dict[str, list[Load]] = {name: [] for name in meters}
    for _ in range(slices):
        for name, meter in meters.items():
            before = meter.snapshot() if meter else {}
            if name == "feed_304_c32":
                load = await run_polls(
                    f"{base_url}{FEED}", token=token, etag=etag, connections=32, seconds=slice_seconds
                )
            else:
                load = await run_wrk(
                    f"{asyncpg_ceiling_url}/bench/asyncpg-ceiling/", connections=32, seconds=slice_seconds
                )
            if meter:
                after = meter.snapshot()
                load.server_cpu_s = meter.spent(before, after, "server")
                load.database_cpu_s = meter.spent(before, after, "database")
            runs[name].append(load)
    if await conditional_feed_get(base_url, token, etag) != 304:
        raise RuntimeError("the feed changed during the polls")
    return {name: _combined(loads) for name, loads in runs.items()}


def _combined(loads: list[Load]) -> Load:
    counted = [load.server_cpu_s for load in loads], [load.database_cpu_s for load in loads]
    return Load(
        requests=sum(load.requests for load in loads),
        seconds=sum(load.seconds for load in loads),
        p50_ms=statistics.median(load.p50_ms for load in loads),
        p99_ms=statistics.median(load.p99_ms for load in loads),
        statuses={status: sum(load.statuses.get(status, 0) for load in loads) for status in loads[0].statuses},
        generator_cpu_share=max(load.generator_cpu_share for load in loads),
        server_cpu_s=None if None in counted[0] else sum(value or 0.0 for value in counted[0]),
        database_cpu_s=None if None in counted[1] else sum(value or 0.0 for value in counted[1]),
    )


def polling_figures(loads: dict[str, Load]) -> dict[str, float]:
    """The feed's 304s per second over the asyncpg ceiling's requests per second (same turns)."""
    return {"feed_304_vs_asyncpg": loads["feed_304_c32"].throughput / loads["asyncpg_ceiling_poll_c32"].throughput}
