"""The feed's section of the benchmark: a page's cost at 10,000, 100,000 and 1,000,000 cleanings.

The cleanings are made in SQL (generate_series), a second apart going back in time from a fixed
moment, every fourth one updated half an hour after its creation: 1.25 events per cleaning. At
each size the first page and a deep page (its cursor 90 % down the feed) take turns under the same
load; at the largest size the first page also takes turns with the ceiling route. Targets: at
1,000,000 cleanings, p50 and p99 of both pages within 1.5 x of the same figures at 10,000.
"""

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
from databases import DatabaseURL

from app.db.admin import libpq_url, sibling_database
from benchmarks.common import Load, interleaved, register_request
from scripts.live_server import ServerProcess, prepare_database

SIZES = (10_000, 100_000, 1_000_000)
CONNECTIONS = 8
START = datetime(2026, 1, 1, tzinfo=UTC)  # the newest cleaning is a second before this
TARGET_1M_VS_10K = 1.5

FILL = """
    INSERT INTO cleanings (name, description, price, cleaning_type, owner, created_at, updated_at)
    SELECT 'cleaning ' || n, 'generated for the benchmark', 10 + n % 90,
           (ARRAY['dust_up', 'spot_clean', 'full_clean'])[1 + n % 3], $1,
           $2::timestamptz - make_interval(secs => n),
           $2::timestamptz - make_interval(secs => n) + CASE WHEN n % 4 = 0 THEN interval '30 minutes' ELSE '0' END
    FROM generate_series($3::int, $4::int) AS n
"""

# The event 90 % down the feed, found once per size (a full sort, outside any measurement).
DEEP_CURSOR = """
    SELECT event_timestamp, id FROM (
        SELECT updated_at AS event_timestamp, id FROM cleanings WHERE updated_at <> created_at
        UNION ALL
        SELECT created_at, id FROM cleanings
    ) AS events
    ORDER BY event_timestamp DESC, id DESC
    OFFSET $1 LIMIT 1
"""


async def fill(conn: asyncpg.Connection, *, owner: int, first: int, last: int) -> None:
    await conn.execute(FILL, owner, START, first, last)
    await conn.execute("VACUUM ANALYZE cleanings")


def feed_url(base_url: str, **params: object) -> str:
    return f"{base_url}/api/feed/cleanings/?{urlencode(params)}" if params else f"{base_url}/api/feed/cleanings/"


async def measure_feed(database_url: DatabaseURL, duration: float) -> dict[str, Any]:
    database_url = sibling_database(database_url, "bench_feed")
    await asyncio.to_thread(prepare_database, database_url)
    server = ServerProcess(database_url, env={"BCRYPT_ROUNDS": "4"}, module="benchmarks.ceiling_app:app")
    base_url = await asyncio.to_thread(server.start)
    results: dict[str, Any] = {"sizes": {}, "connections": CONNECTIONS}
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            res = await http.post("/api/users/", json=register_request("feeder")[2]["json"])
            res.raise_for_status()
            token = str(res.json()["access_token"]["access_token"])
            owner = int(res.json()["id"])
        conn = await asyncpg.connect(libpq_url(database_url))
        try:
            made = 0
            for size in SIZES:
                started = asyncio.get_running_loop().time()
                await fill(conn, owner=owner, first=made + 1, last=size)
                fill_s = asyncio.get_running_loop().time() - started
                made = size
                events = await conn.fetchval(
                    "SELECT count(*) + count(*) FILTER (WHERE updated_at <> created_at) FROM cleanings"
                )
                deep = await conn.fetchrow(DEEP_CURSOR, int(events * 0.9))
                deep_cursor = {
                    "starting_date": deep["event_timestamp"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "starting_id": deep["id"],
                }
                loads = await interleaved(
                    {
                        "first": (feed_url(base_url), token),
                        "deep": (feed_url(base_url, **deep_cursor), token),
                    },
                    connections=CONNECTIONS,
                    seconds=duration * 2,
                )
                results["sizes"][str(size)] = {
                    "events": events,
                    "fill_s": round(fill_s, 1),
                    **{name: load_figures(load) for name, load in loads.items()},
                }
            # One worker's throughput on the first page against the ceiling, at the largest size.
            ceiling = await interleaved(
                {"ceiling_c32": (f"{base_url}/bench/ceiling/", None), "first_c32": (feed_url(base_url), token)},
                connections=32,
                seconds=duration * 2,
            )
            results["ceiling_c32"] = load_figures(ceiling["ceiling_c32"])
            results["first_c32"] = load_figures(ceiling["first_c32"])
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.stop)

    small, large = results["sizes"][str(SIZES[0])], results["sizes"][str(SIZES[-1])]
    results["ratios_1m_vs_10k"] = {
        f"{page}_{stat}": large[page][stat] / small[page][stat]
        for page in ("first", "deep")
        for stat in ("p50_ms", "p99_ms")
    }
    results["first_vs_ceiling_throughput"] = results["first_c32"]["throughput"] / results["ceiling_c32"]["throughput"]
    return results


def load_figures(load: Load) -> dict[str, float]:
    return {"throughput": load.throughput, "p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "requests": load.requests}


def report_feed(feed: dict[str, Any]) -> list[str]:
    lines = [f"feed, c={feed['connections']}, first page and deep page (cursor 90 % down) taking turns:"]
    for size, figures in feed["sizes"].items():
        lines.append(
            f"  {int(size):>9,} cleanings ({figures['events']:,} events, filled in {figures['fill_s']} s): "
            f"first p50 {figures['first']['p50_ms']:.1f} ms p99 {figures['first']['p99_ms']:.1f} ms "
            f"({figures['first']['throughput']:.0f}/s); deep p50 {figures['deep']['p50_ms']:.1f} ms "
            f"p99 {figures['deep']['p99_ms']:.1f} ms ({figures['deep']['throughput']:.0f}/s)"
        )
    for key, ratio in feed["ratios_1m_vs_10k"].items():
        verdict = "met" if ratio <= TARGET_1M_VS_10K else "MISSED"
        lines.append(f"  1M / 10k, {key}: {ratio:.2f}  (target <= {TARGET_1M_VS_10K:g}: {verdict})")
    first, ceiling = feed["first_c32"]["throughput"], feed["ceiling_c32"]["throughput"]
    lines.append(
        f"  first page c=32 at 1M: {first:.0f}/s, ceiling {ceiling:.0f}/s: "
        f"{feed['first_vs_ceiling_throughput']:.2f} of the ceiling"
    )
    return lines


def chart_feed(feed: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(feed["sizes"])
    series = [("first", "p50_ms"), ("first", "p99_ms"), ("deep", "p50_ms"), ("deep", "p99_ms")]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(sizes)
    colors = ["#a6cbe8", "#4a90d9", "#1f4e79"]
    for i, size in enumerate(sizes):
        values = [feed["sizes"][size][page][stat] for page, stat in series]
        positions = [x + (i - (len(sizes) - 1) / 2) * width for x in range(len(series))]
        bars = ax.bar(positions, values, width, label=f"{int(size):,} cleanings", color=colors[i % len(colors)])
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{value:.1f}", ha="center", va="bottom")
    ax.set_xticks(range(len(series)), [f"{page} page {stat[:3]}" for page, stat in series])
    ax.set_ylabel(f"latency, ms (c={feed['connections']}, one run)")
    ax.set_title("Phresh feed: a page's latency at three table sizes (target: 1M within 1.5 x of 10k)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
