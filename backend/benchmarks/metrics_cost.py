"""What metrics cost: GET /api/users/me/ with metrics on and off, in one run.

Two servers of this tree on one scratch database, identical but for METRICS_TOKEN (and, on the
one with metrics, a PROMETHEUS_MULTIPROC_DIR as `manage.py serve` sets: the multiprocess mode,
the dearer of the two), loaded by wrk in turns (off, on, off, on, ...) so that a change in the
machine's load falls on both alike. The figure is on / off for requests per second: over the
whole run, and the median of each round's ratio (a round is one turn of each, a few seconds
apart, so a neighbour's load that comes and goes moves its two figures together). The CPU each
server spent per request is beside it: on a shared machine it moves less than throughput does.
"""

import asyncio
import secrets
import statistics
import tempfile
from typing import Any

import httpx
from databases import DatabaseURL
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import CpuMeter, Load, combined, log_in, register_request, take_turns, verdict
from scripts.live_server import ServerProcess, prepare_database

TARGET = (">=", 0.95)  # metrics on may cost at most 5 % of /me's throughput
ME = "/api/users/me/"


async def counted_me_requests(base_url: str, token: str) -> float:
    """/me's 2xx answers as the server with metrics counts them."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        res = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        res.raise_for_status()
    return sum(
        sample.value
        for family in text_string_to_metric_families(res.text)
        for sample in family.samples
        if sample.name == "phresh_http_requests_total"
        and sample.labels.get("route") == ME
        and sample.labels.get("status_class") == "2xx"
    )


async def measure_metrics_cost(
    database_url: DatabaseURL, *, duration: float, rounds: int, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    await asyncio.to_thread(prepare_database, database_url)
    metrics_token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="phresh-metrics-bench-") as metrics_dir:
        off = ServerProcess(database_url, env=env, workers=workers)
        on = ServerProcess(
            database_url,
            env={**env, "METRICS_TOKEN": metrics_token, "PROMETHEUS_MULTIPROC_DIR": metrics_dir},
            workers=workers,
        )
        off_url = await asyncio.to_thread(off.start)
        try:
            on_url = await asyncio.to_thread(on.start)
            async with httpx.AsyncClient(base_url=off_url, timeout=60) as http:
                (await http.post("/api/users/", json=register_request("bencher")[2]["json"])).raise_for_status()
            tokens = {"off": await log_in(off_url), "on": await log_in(on_url)}
            async with httpx.AsyncClient(timeout=60) as http:
                for url, token in ((off_url, tokens["off"]), (on_url, tokens["on"])):
                    (await http.get(f"{url}{ME}", headers={"Authorization": f"Bearer {token}"})).raise_for_status()
                res = await http.get(f"{off_url}/metrics")
                if res.status_code != 404:
                    raise RuntimeError(f"metrics are not off on the server without METRICS_TOKEN ({res.status_code})")
            before = await counted_me_requests(on_url, metrics_token)
            assert off.process is not None and on.process is not None
            runs = await take_turns(
                {"off": (f"{off_url}{ME}", tokens["off"]), "on": (f"{on_url}{ME}", tokens["on"])},
                connections=32,
                slice_seconds=max(1, int(duration)),  # wrk takes whole seconds
                slices=rounds,
                meters={"off": CpuMeter(off.process.pid), "on": CpuMeter(on.process.pid)},
            )
            counted = await counted_me_requests(on_url, metrics_token) - before
        finally:
            await asyncio.to_thread(on.stop)
            await asyncio.to_thread(off.stop)
    loads = {name: combined(slices) for name, slices in runs.items()}
    round_ratios = [on_.throughput / off_.throughput for off_, on_ in zip(runs["off"], runs["on"], strict=True)]
    return {
        "workers": workers,
        "rounds": rounds,
        "seconds_per_turn": duration,
        "off": {"throughput": loads["off"].throughput, "p50_ms": loads["off"].p50_ms, "p99_ms": loads["off"].p99_ms},
        "on": {"throughput": loads["on"].throughput, "p50_ms": loads["on"].p50_ms, "p99_ms": loads["on"].p99_ms},
        "on_vs_off_throughput": loads["on"].throughput / loads["off"].throughput,
        "on_vs_off_p99": loads["on"].p99_ms / loads["off"].p99_ms,
        "on_vs_off_throughput_round_median": statistics.median(round_ratios),
        "round_ratios": round_ratios,
        "cpu_us_per_request": {"off": cpu_per_request(loads["off"]), "on": cpu_per_request(loads["on"])},
        "answered_on": loads["on"].requests,
        "counted_on": counted,
    }


def cpu_per_request(load: Load) -> float:
    """The server's CPU microseconds per answered request (all its processes)."""
    return (load.server_cpu_s or 0.0) / max(1, load.requests) * 1e6


def report_metrics_cost(figures: dict[str, Any]) -> list[str]:
    off, on = figures["off"], figures["on"]
    ratio, median = figures["on_vs_off_throughput"], figures["on_vs_off_throughput_round_median"]
    cpu = figures["cpu_us_per_request"]
    return [
        f"metrics cost: GET {ME} c=32, {figures['workers']} worker(s), {figures['rounds']} turns of "
        f"{figures['seconds_per_turn']:g} s each",
        f"  metrics off: {off['throughput']:.1f}/s p50 {off['p50_ms']:.1f} ms p99 {off['p99_ms']:.1f} ms",
        f"  metrics on:  {on['throughput']:.1f}/s p50 {on['p50_ms']:.1f} ms p99 {on['p99_ms']:.1f} ms",
        f"  on / off throughput: {ratio:.3f}{verdict(ratio, TARGET)}",
        f"  on / off throughput, median of the rounds' ratios: {median:.3f}{verdict(median, TARGET)}",
        f"  on / off p99: {figures['on_vs_off_p99']:.2f}",
        f"  server CPU per request: off {cpu['off']:.0f} us, on {cpu['on']:.0f} us ({cpu['on'] / cpu['off']:.3f})",
        f"  /me answers counted by /metrics: {figures['counted_on']:.0f} of {figures['answered_on']} wrk saw answered",
    ]
