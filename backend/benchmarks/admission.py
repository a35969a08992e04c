"""The admission section of the benchmark: password checks at the pace clients send them.

Register and login, each with 8 and then 12 clients sending their next request as soon as the last
is answered (a 503 resent at once), then a burst of registrations whose clients go away with their
last requests in flight, followed by 8 login clients. For each load:
- the share of answers that were 503s (target: at most 1 %: eight or twelve clients on two cores
  wait a second or two, which is no reason to turn anyone away);
- goodput: successful requests per second / the bcrypt floor (cores / hash time);
- the p99 of the answered ones against HASH_MAX_WAIT_SECONDS plus one hash (the most an admitted
  request should wait, plus its own hash), as a ratio: at most 1.
"""

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from app.core.config import HASH_MAX_WAIT_SECONDS
from benchmarks import common
from benchmarks.common import Load, login_request, register_request, run_posts
from benchmarks.flood import encoded

CLIENTS = (8, 12)
BURST_CLIENTS = 8
BURST_SECONDS = 1.5

TARGETS: dict[str, tuple[str, float]] = {}
for _kind in ("register", "login"):
    for _clients in CLIENTS:
        TARGETS[f"{_kind}_c{_clients}_refused_share"] = ("<=", 0.01)
        TARGETS[f"{_kind}_c{_clients}_vs_floor"] = (">=", 0.95)
        TARGETS[f"{_kind}_c{_clients}_ok_p99_vs_bound"] = ("<=", 1.0)
TARGETS["login_after_burst_refused_share"] = ("<=", 0.01)
TARGETS["login_after_burst_vs_floor"] = (">=", 0.95)


def refused_share(load: Load) -> float:
    answers = sum(load.statuses.values())
    return load.statuses.get(503, 0) / answers if answers else float("nan")


async def abandoned_burst(base_url: str, *, clients: int, seconds: float) -> int:
    """`clients` clients register as fast as they are answered for `seconds`, then close their
    connections with their last requests unanswered; how many requests they sent."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    sent = 0

    async def client(number: int) -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, port)
        deadline = time.perf_counter() + seconds
        try:
            while True:
                sent += 1
                writer.write(encoded(*register_request(f"burst{number}n{sent}")))
                await writer.drain()
                if time.perf_counter() > deadline:
                    return  # in flight: leave without its answer
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return sent


async def measure_admission(
    base_url: str, *, seconds: float, floor_per_s: float, hash_s: float
) -> tuple[dict[str, Any], dict[str, Load]]:
    """The figures, and the loads they come from (by name: register_c8 ... login_after_burst)."""
    loads: dict[str, Load] = {}
    for kind, make_request in (("register", register_request), ("login", login_request)):
        for clients in CLIENTS:
            prefix = f"r{clients}x" if kind == "register" else ""
            loads[f"{kind}_c{clients}"] = await run_posts(
                base_url, connections=clients, seconds=seconds, make_request=make_request, prefix=prefix
            )
    burst_sent = await abandoned_burst(base_url, clients=BURST_CLIENTS, seconds=BURST_SECONDS)
    loads["login_after_burst"] = await run_posts(
        base_url, connections=8, seconds=seconds, make_request=login_request, prefix=""
    )
    bound_s = HASH_MAX_WAIT_SECONDS + hash_s
    figures: dict[str, Any] = {"max_wait_s": HASH_MAX_WAIT_SECONDS, "bound_s": bound_s, "burst_sent": burst_sent}
    for name, load in loads.items():
        figures[f"{name}_refused_share"] = refused_share(load)
        figures[f"{name}_vs_floor"] = load.throughput / floor_per_s
        figures[f"{name}_ok_p99_vs_bound"] = (load.ok_p99_ms or float("nan")) / 1000 / bound_s
    return figures, loads


LABELS = {
    **{f"{kind}_c{clients}": f"{kind} c={clients}" for kind in ("register", "login") for clients in CLIENTS},
    "login_after_burst": "login c=8 after an abandoned burst of registrations",
}


def report_admission(figures: dict[str, Any], loads: dict[str, dict[str, Any]]) -> list[str]:
    """Lines for the report, from the figures and the loads as written to the results (dicts)."""

    def verdict(key: str) -> str:
        return common.verdict(figures[key], TARGETS.get(key))

    lines = [
        f"admission: HASH_MAX_WAIT_SECONDS {figures['max_wait_s']:g} s; an answer's bound = that + one hash "
        f"= {figures['bound_s']:.2f} s; the burst sent {figures['burst_sent']} registrations"
    ]
    for name, label in LABELS.items():
        load = loads[name]
        lines += [
            f"{label}: answers {load['statuses']}, {load['throughput']:.2f} successful/s, "
            f"p50 {load['p50_ms']:.0f} ms, p99 of the answered {load['ok_p99_ms']:.0f} ms",
            f"  refused {figures[f'{name}_refused_share']:.1%}{verdict(f'{name}_refused_share')}; "
            f"goodput / floor {figures[f'{name}_vs_floor']:.2f}{verdict(f'{name}_vs_floor')}; "
            f"p99 / bound {figures[f'{name}_ok_p99_vs_bound']:.2f}{verdict(f'{name}_ok_p99_vs_bound')}",
        ]
    return lines
