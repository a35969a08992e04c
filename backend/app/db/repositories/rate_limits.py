"""Sliding-window counters kept in PostgreSQL, so that limits hold across workers and restarts."""

from dataclasses import dataclass

from app.db.repositories.base import BaseRepository, as_dict

RECORD_HITS_QUERY = """
    INSERT INTO rate_limit_hits (bucket, key)
    SELECT unnest(CAST(:buckets AS text[])), unnest(CAST(:keys AS text[]))
    RETURNING id, bucket;
"""

# For each new hit: its place among the hits of its (bucket, key) inside the window (counting
# only those recorded before it, so a burst admits its first few, not none), and the seconds
# until the oldest of them leaves the window.
COUNT_HITS_QUERY = """
    SELECT wanted.bucket,
           count(hits.id) AS hits,
           ceil(extract(epoch FROM min(hits.created_at) + make_interval(secs => :window) - now())) AS retry_after
    FROM unnest(CAST(:buckets AS text[]), CAST(:keys AS text[]), CAST(:ids AS bigint[])) AS wanted (bucket, key, id)
    LEFT JOIN rate_limit_hits AS hits
        ON hits.bucket = wanted.bucket
       AND hits.key = wanted.key
       AND hits.id <= wanted.id
       AND hits.created_at > now() - make_interval(secs => :window)
    GROUP BY wanted.bucket;
"""

DELETE_HITS_BY_ID_QUERY = """
    DELETE FROM rate_limit_hits WHERE id = ANY(CAST(:ids AS bigint[]));
"""

# A key's whole count, and with it the other buckets' rows of one attempt (by id).
CLEAR_KEY_QUERY = """
    DELETE FROM rate_limit_hits
    WHERE (bucket = :bucket AND key = :key) OR id = ANY(CAST(:ids AS bigint[]));
"""

PURGE_QUERY = """
    DELETE FROM rate_limit_hits WHERE created_at < now() - make_interval(secs => :older_than);
"""


@dataclass(frozen=True)
class Hit:
    """One counted attempt, recorded in several buckets at once (an account, an address)."""

    ids: list[int]
    counts: dict[str, tuple[int, int]]  # bucket -> (hits in the window, seconds until one leaves)


class RateLimitsRepository(BaseRepository):
    async def record_hit(self, *, keys: dict[str, str], window_seconds: int) -> Hit:
        """Count one attempt in each bucket, and return each bucket's count up to and including it.

        Recording before counting keeps the limit under concurrency: of N parallel attempts, each
        counts the ones recorded before it, so no more than the limit are let through.
        """
        buckets, values = list(keys), list(keys.values())
        inserted = {
            row["bucket"]: int(row["id"])
            for row in map(as_dict, await self.db.fetch_all(RECORD_HITS_QUERY, {"buckets": buckets, "keys": values}))
        }
        ids = [inserted[bucket] for bucket in buckets]
        values_with_ids = {"buckets": buckets, "keys": values, "ids": ids, "window": float(window_seconds)}
        counts = {}
        for row in map(as_dict, await self.db.fetch_all(COUNT_HITS_QUERY, values_with_ids)):
            counts[row["bucket"]] = (int(row["hits"]), max(1, int(row["retry_after"] or 1)))
        return Hit(ids=ids, counts=counts)

    async def forget_hit(self, *, hit: Hit) -> None:
        """Take an attempt back out of its buckets: it was refused, or it succeeded."""
        await self.db.execute(DELETE_HITS_BY_ID_QUERY, {"ids": hit.ids})

    async def clear(self, *, bucket: str, key: str, hit: Hit | None = None) -> None:
        """Wipe a key's count; with `hit`, take that attempt out of its other buckets too."""
        await self.db.execute(CLEAR_KEY_QUERY, {"bucket": bucket, "key": key, "ids": hit.ids if hit else []})

    async def purge(self, *, older_than_seconds: int) -> None:
        await self.db.execute(PURGE_QUERY, {"older_than": float(older_than_seconds)})
