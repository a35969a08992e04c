"""Finding cleaners: cleaners with their evaluation statistics, sorted by rating or by completed
jobs, a page at a time.

A cleaner is a user with at least one evaluation, that is one completed job (an evaluation marks
its offer completed). The figures come from `cleaner_stats` (revision 4c8e1a6d9f27), one row per
cleaner that a trigger on the evaluations keeps in the transaction of every change to them; they
are computed here from its sums and counts exactly as GET_CLEANER_AGGREGATES_QUERY computes them
from the evaluations (app/db/repositories/evaluations.py).

Each sort is a total order, (key, cleaner id) descending: a page is a backward range scan of that
sort's index from the cursor, stopped after a page (and a join by primary key to each cleaner's
user and profile), whatever the number of cleaners. Deactivated users are left out as the scan
meets them (a deleted user has no evaluations left, so no row).
"""

from collections.abc import Mapping
from typing import Any

from app.db.repositories.base import BaseRepository
from app.db.repositories.users import user_from_row, user_with_profile_columns
from app.models.cleaner import CleanerCursor, CleanerPublic, CleanerSort
from app.models.evaluation import EvaluationAggregate
from app.models.user import UserPublic

STARS = ("zero_stars", "one_stars", "two_stars", "three_stars", "four_stars", "five_stars")


def _average(field: str) -> str:
    # As AVG(field::float8): PostgreSQL's float8 average is its float8 sum over the count.
    return f"CASE WHEN s.{field}_count > 0 THEN s.{field}_sum::float8 / s.{field}_count END AS avg_{field}"


def _extreme(name: str, stars: tuple[str, ...]) -> str:
    # The first rating, in `stars`' order, that some evaluation gave (never null: a row has one).
    whens = " ".join(f"WHEN s.{column} > 0 THEN {STARS.index(column)}" for column in stars)
    return f"CASE {whens} END AS {name}"


STATS_COLUMNS = ", ".join(
    [
        _average("professionalism"),
        _average("completeness"),
        _average("efficiency"),
        "s.overall_rating_sum::float8 / s.total_evaluations AS avg_overall_rating",
        _extreme("min_overall_rating", STARS),
        _extreme("max_overall_rating", STARS[::-1]),
        *(f"s.{column}" for column in STARS[1:]),
        "s.total_evaluations",
        "s.total_no_show",
        "s.rating",
    ]
)

# The sort key of each order, with the index it is read through.
SORT_KEYS = {
    CleanerSort.rating: "s.rating",  # ix_cleaner_stats_rating
    CleanerSort.completed_jobs: "s.total_evaluations",  # ix_cleaner_stats_completed_jobs
}


def _list_cleaners_query(sort: CleanerSort, *, after_cursor: bool) -> str:
    key = SORT_KEYS[sort]
    where = f"({key}, s.cleaner_id) < (:after_key, :after_id) AND u.is_active" if after_cursor else "u.is_active"
    return f"""
        SELECT {STATS_COLUMNS}, {user_with_profile_columns(prefix="cleaner_")}
        FROM cleaner_stats s
        JOIN users u ON u.id = s.cleaner_id
        LEFT JOIN profiles p ON p.user_id = u.id
        WHERE {where}
        ORDER BY {key} DESC, s.cleaner_id DESC
        LIMIT :limit;
    """


# One statement per sort, for the first page and for a page after a cursor.
LIST_CLEANERS_QUERIES = {
    (sort, after_cursor): _list_cleaners_query(sort, after_cursor=after_cursor)
    for sort in CleanerSort
    for after_cursor in (False, True)
}

AGGREGATE_FIELDS = tuple(EvaluationAggregate.model_fields)


class CleanersRepository(BaseRepository):
    async def list_cleaners(
        self, *, sort: CleanerSort, limit: int, after: CleanerCursor | None = None
    ) -> tuple[list[CleanerPublic], CleanerCursor | None]:
        """A page of cleaners in `sort`'s order, after the cursor `after` (of the same sort), and
        the cursor of the next page (None when this one is the last)."""
        assert after is None or after.sort is sort  # the route refuses another sort's cursor
        # One more than a page: whether there is a next page, without a page of nothing at the end.
        values: dict[str, Any] = {"limit": limit + 1}
        if after is not None:
            values |= {"after_key": after.key, "after_id": after.id}
        records = await self.db.fetch_all(query=LIST_CLEANERS_QUERIES[sort, after is not None], values=values)
        cleaners = [self._cleaner_from_row(record._mapping) for record in records[:limit]]
        if len(records) <= limit:
            return cleaners, None
        last = cleaners[-1]
        key = last.rating if sort is CleanerSort.rating else last.stats.total_evaluations
        return cleaners, CleanerCursor(sort=sort, key=key, id=last.cleaner.id)

    @staticmethod
    def _cleaner_from_row(row: Mapping[str, Any]) -> CleanerPublic:
        user = user_from_row(row, prefix="cleaner_")
        assert user is not None  # an inner join
        return CleanerPublic(
            cleaner=UserPublic.from_user(user),
            rating=row["rating"],
            stats=EvaluationAggregate.model_validate({field: row[field] for field in AGGREGATE_FIELDS}),
        )
