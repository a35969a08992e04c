"""The flood's section of the benchmark: useful work under more password checks than the machine can do.

Sixty-four clients log in (then, separately, register) as fast as they are answered, a 503 resent
at once, as impatient clients and scripts do. Beside them a probe reads /me at a steady pace, as
a few people using the site would, and it read /me at the same pace before the flood, idle. When
the flood ends, one client logs in, resending at once until it gets in.

Figures, each against an anchor taken in the same run:
- goodput: successful logins (registrations) per second / the bcrypt floor (cores / hash time);
- the p99 of the answered requests (2xx), against 2 s;
- /me's p99 under the flood / its idle p99;
- recovery: seconds from the flood's end to a successful login, against 2 s.

The probe is paced rather than a closed loop: a client reading /me back to back would itself keep
one of the two cores busy, and the goodput would measure it rather than the service.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks.common import percentile, register_request

CONNECTIONS = 64
PROBE_EVERY_SECONDS = 0.05  # /me twenty times a second

TARGETS = {
    "login_flood_goodput_vs_floor": (">=", 0.8),
    "login_flood_ok_p99_s": ("<=", 2.0),
    "login_flood_me_p99_vs_idle": ("<=", 3.0),
    "login_flood_recovery_s": ("<=", 2.0),
    "register_flood_goodput_vs_floor": (">=", 0.8),
    "register_flood_ok_p99_s": ("<=", 2.0),
    "register_flood_me_p99_vs_idle": ("<=", 3.0),
}

Request = tuple[str, str, dict[str, Any]]


def login_request(_: str) -> Request:
    return "POST", "/api/users/login/token/", {"data": {"username": "bencher", "password": "benchmark-pass"}}


async def probe(http: httpx.AsyncClient, token: str, *, until: float) -> list[float]:
    """GET /me every PROBE_EVERY_SECONDS (or as soon as the last one is answered, if later)."""
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    next_at = time.perf_counter()
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        started = time.perf_counter()
        res = await http.get("/api/users/me/", headers=headers)
        res.raise_for_status()
        latencies.append(time.perf_counter() - started)
        next_at = max(next_at + PROBE_EVERY_SECONDS, time.perf_counter())
    return latencies


async def flood(
    base_url: str, *, make_request: Callable[[str], Request], prefix: str, until: float
) -> dict[int, list[float]]:
    """CONNECTIONS clients, each resending as soon as it is answered, until `until`; latencies by status."""
    latencies: dict[int, list[float]] = {}
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:

        async def client(number: int) -> None:
            sent = 0
            while time.perf_counter() < until:
                sent += 1
                method, path, kwargs = make_request(f"{prefix}{number}n{sent}")
                started = time.perf_counter()
                res = await http.request(method, path, **kwargs)
                latencies.setdefault(res.status_code, []).append(time.perf_counter() - started)

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
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        idle = await probe(http, token, until=time.perf_counter() + min(seconds, 5))
        started = time.perf_counter()
        until = started + seconds
        answers, loaded = await asyncio.gather(
            flood(base_url, make_request=make_request, prefix=f"{kind[0]}f", until=until),
            probe(http, token, until=until),
        )
        flood_seconds = time.perf_counter() - started
        # The clients stop sending at `until`; the requests they have in flight are still answered.
        recovery = await seconds_to_log_in(http, since=until)
    ok = [t for status, times in answers.items() if 200 <= status < 300 for t in times]
    figures: dict[str, Any] = {
        "statuses": {status: len(times) for status, times in sorted(answers.items())},
        "seconds": flood_seconds,
        "ok_per_s": len(ok) / flood_seconds,
        "ok_p50_s": percentile(ok, 50),
        "ok_p99_s": percentile(ok, 99),
        "refused_p50_s": percentile(answers.get(503, []), 50),
        "me_idle_p99_ms": percentile(idle, 99) * 1000,
        "me_flood_p99_ms": percentile(loaded, 99) * 1000,
        "me_probes": len(loaded),
    }
    figures[f"{kind}_flood_goodput_vs_floor"] = figures["ok_per_s"] / floor_per_s
    figures[f"{kind}_flood_ok_p99_s"] = figures["ok_p99_s"]
    figures[f"{kind}_flood_me_p99_vs_idle"] = figures["me_flood_p99_ms"] / figures["me_idle_p99_ms"]
    if kind == "login":
        figures["login_flood_recovery_s"] = recovery
    return figures


def report_flood(kind: str, figures: dict[str, Any]) -> list[str]:
    def verdict(key: str) -> str:
        op, target = TARGETS[key]
        met = figures[key] >= target if op == ">=" else figures[key] <= target
        return f"  (target {op} {target:g}: {'met' if met else 'MISSED'})"

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
