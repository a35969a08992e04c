"""The flood's section of the benchmark: useful work under more password checks than the machine can do.

Sixty-four clients log in (then, separately, register) as fast as they are answered, a 503 resent
at once, as impatient clients and scripts do. Beside them a probe reads /me at a steady pace, as
a few people using the site would, and it read /me at the same pace for as long before the flood,
idle. When the flood ends, one client logs in, resending at once until it gets in.

Figures, each against an anchor taken in the same run:
- goodput: successful logins (registrations) per second / the bcrypt floor (cores / hash time);
- the p99 of the answered requests (2xx), against 2.5 s (HASH_MAX_WAIT_SECONDS's 2 s and a hash);
- /me's p99 under the flood / its idle p99;
- recovery: seconds from the flood's end to a successful login, against 2 s.

The probe is paced rather than a closed loop (wrk, one connection, 20 ms between an answer and the
next request): a client reading /me back to back would itself keep one of the two cores busy, and
the goodput would measure it rather than the service.
"""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from benchmarks import common
from benchmarks.common import Load, login_request, percentile, register_request, run_wrk

CONNECTIONS = 64
PROBE_PACE_MS = 20  # /me about fifty times a second

TARGETS = {
    "login_flood_goodput_vs_floor": (">=", 0.9),
    "login_flood_ok_p99_s": ("<=", 2.5),
    "login_flood_me_p99_vs_idle": ("<=", 3.0),
    "login_flood_recovery_s": ("<=", 2.0),
    "register_flood_goodput_vs_floor": (">=", 0.9),
    "register_flood_ok_p99_s": ("<=", 2.5),
    "register_flood_me_p99_vs_idle": ("<=", 3.0),
}

Request = tuple[str, str, dict[str, Any]]


async def probe(base_url: str, token: str, *, seconds: float) -> Load:
    """GET /me, one request every PROBE_PACE_MS after the last answer, from a wrk of its own
    (a separate process: the flood's generator keeps its own event loop busy)."""
    return await run_wrk(
        f"{base_url}/api/users/me/", connections=1, seconds=seconds, token=token, pace_ms=PROBE_PACE_MS
    )


def encoded(method: str, path: str, kwargs: dict[str, Any]) -> bytes:
    """The request as bytes on the wire (HTTP/1.1, keep-alive)."""
    if "json" in kwargs:
        body, content_type = json.dumps(kwargs["json"]).encode(), "application/json"
    else:
        body, content_type = urlencode(kwargs["data"]).encode(), "application/x-www-form-urlencoded"
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def flood(
    base_url: str, *, make_request: Callable[[str], Request], prefix: str, until: float
) -> dict[int, list[float]]:
    """CONNECTIONS clients, each resending as soon as it is answered, until `until`; latencies by status.

    Plain HTTP/1.1 on asyncio streams, one keep-alive connection per client: a flood's generator
    on the server's own two cores must cost as little CPU as it can (httpx takes several times more).
    """
    latencies: dict[int, list[float]] = {}
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        sent = 0
        try:
            while time.perf_counter() < until:
                sent += 1
                request = encoded(*make_request(f"{prefix}{number}n{sent}"))
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                latencies.setdefault(status, []).append(time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(CONNECTIONS)))
    return latencies


async def seconds_to_log_in(http: httpx.AsyncClient, *, since: float) -> float:
    """Log in, resending at once on a refusal, until it works: seconds since `since`."""
    while True:
        method, path, kwargs = login_request("")
        if (await http.request(method, path, **kwargs)).status_code == 200:
            return time.perf_counter() - since


async def measure_flood(base_url: str, token: str, *, kind: str, seconds: float, floor_per_s: float) -> dict[str, Any]:
    make_request = login_request if kind == "login" else register_request
    # As long as the flood: two p99s over the same number of requests (at 5 s, the idle one rested
    # on its three slowest of 250 and moved by a third from run to run).
    idle = await probe(base_url, token, seconds=seconds)
    started = time.perf_counter()
    until = started + seconds
    answers, loaded = await asyncio.gather(
        flood(base_url, make_request=make_request, prefix=f"{kind[0]}f", until=until),
        probe(base_url, token, seconds=seconds),
    )
    flood_seconds = time.perf_counter() - started
    for load in (idle, loaded):
        if load.statuses.get(200) != load.requests:  # a 401 is cheap: it would flatter the figure
            raise RuntimeError(f"the /me probe got {load.requests - load.statuses.get(200, 0)} answers other than 200")
    # The clients stop sending at `until`; the requests they have in flight are still answered.
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        recovery = await seconds_to_log_in(http, since=until)
    ok = [t for status, times in answers.items() if 200 <= status < 300 for t in times]
    figures: dict[str, Any] = {
        "statuses": {status: len(times) for status, times in sorted(answers.items())},
        "seconds": flood_seconds,
        "ok_per_s": len(ok) / flood_seconds,
        "ok_p50_s": percentile(ok, 50),
        "ok_p99_s": percentile(ok, 99),
        "refused_p50_s": percentile(answers.get(503, []), 50),
        "me_idle_p99_ms": idle.p99_ms,
        "me_flood_p99_ms": loaded.p99_ms,
        "me_probes": loaded.requests,
    }
    figures[f"{kind}_flood_goodput_vs_floor"] = figures["ok_per_s"] / floor_per_s
    figures[f"{kind}_flood_ok_p99_s"] = figures["ok_p99_s"]
    figures[f"{kind}_flood_me_p99_vs_idle"] = figures["me_flood_p99_ms"] / figures["me_idle_p99_ms"]
    if kind == "login":
        figures["login_flood_recovery_s"] = recovery
    return figures


def report_flood(kind: str, figures: dict[str, Any]) -> list[str]:
    def verdict(key: str) -> str:
        return common.verdict(figures[key], TARGETS[key])

    name = f"{kind}_flood"
    lines = [
        f"{kind} flood c={CONNECTIONS}, {figures['seconds']:.1f} s: answers {figures['statuses']}",
        f"{kind} flood: {figures['ok_per_s']:.2f} successful/s, p50 {figures['ok_p50_s']:.2f} s; "
        f"a refusal takes {figures['refused_p50_s']:.2f} s (p50)",
        f"{kind} flood goodput / floor: {figures[f'{name}_goodput_vs_floor']:.2f}{verdict(f'{name}_goodput_vs_floor')}",
        f"{kind} flood p99 of the successful: {figures[f'{name}_ok_p99_s']:.2f} s{verdict(f'{name}_ok_p99_s')}",
        f"{kind} flood /me p99 {figures['me_flood_p99_ms']:.1f} ms / idle {figures['me_idle_p99_ms']:.1f} ms: "
        f"{figures[f'{name}_me_p99_vs_idle']:.2f}{verdict(f'{name}_me_p99_vs_idle')}",
    ]
    if kind == "login":
        lines.append(
            f"login flood: a login succeeds {figures['login_flood_recovery_s']:.2f} s after its end"
            f"{verdict('login_flood_recovery_s')}"
        )
    return lines
