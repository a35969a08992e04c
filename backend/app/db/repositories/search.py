"""Searching for jobs (issue 24): full-text search over the cleanings, filtered, sorted by
relevance, date or price, and paged with an exact keyset cursor.

The words of a cleaning are `cleanings.search_vector` (its name, weight A, and description, weight
B, stemmed by `cleaning_search_config()`: migration 3f7a9c2e5b14), matched with
`websearch_to_tsquery` through a GIN index. A page's cost does not grow with the table:

- newest / price_asc / price_desc: a range scan of a b-tree in the page's order from the cursor
  (`ix_cleanings_created_at_id`, `ix_cleanings_price_id`), each row tested against the query and the
  filters, stopped after a page; or, when the query's words are rare, the GIN index's few matches
  sorted. PostgreSQL chooses by the query's words, so every plan is made for its own values
  (`plan_cache_mode = force_custom_plan` for the transaction: a generic plan, made once for any
  words, would walk the whole b-tree for a rare one).
- relevance: ranking needs every candidate, so the candidates are a window: the newest
  SEARCH_RELEVANCE_WINDOW matches (found as above), ranked by `ts_rank`, then paged in (rank, id)
  order. The first page fixes the window in the cursor, by its newest and oldest members; later
  pages read the same matches again, newest first from that newest member (the same plan and cost
  as the first page's), and rank those still there. A job posted since is not in the window (a new
  search ranks it), so paging neither skips nor repeats. (Bounding the window by its oldest member
  alone, as a range, let PostgreSQL AND it with every match in the GIN index: a cost that grew
  with the table.)

Every order ends with the id, so it is total and the cursor (the last item's key and id) is exact.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.core.config import SEARCH_RELEVANCE_WINDOW
from app.db.errors import SearchQueryOnlyExcludesError, SearchQueryWithoutWordsError
from app.db.json_rows import model_json
from app.db.repositories.base import BaseRepository
from app.db.repositories.cleanings import CLEANING_COLUMNS
from app.db.repositories.users import user_json, user_with_profile_columns
from app.models.search import CleaningSearchItem, SearchCursor, SearchFilters, SearchInclude, SearchSort

_TSQUERY = "websearch_to_tsquery(cleaning_search_config(), CAST(:q AS text))"

# Runs first, in the search's transaction: how the query parses (no lexemes: only stop words or
# punctuation; nothing the index can look up: only excluded words); custom plans from here on, and
# no JIT compilation (a walk that stops after a page is costed as if it read all it might, which
# passes jit_above_cost: compiling took 40 ms of a 7 ms search).
CHECK_SEARCH_QUERY = f"""
    SELECT set_config('plan_cache_mode', 'force_custom_plan', true) AS plan_cache_mode,
           set_config('jit', 'off', true) AS jit,
           numnode({_TSQUERY}) AS terms,
           querytree({_TSQUERY}) AS indexable;
"""

# With each plan made for its values, a filter that is not set (NULL) folds away, and one that is
# becomes a plain condition the indexes can serve. A taken job is looked up per row it passes
# (OFFSET 0 keeps PostgreSQL from hashing every accepted offer instead, a cost that grows with the
# table), through the partial unique index on the accepted and completed offers.
_FILTERS = f"""
    (CAST(:q AS text) IS NULL OR c.search_vector @@ {_TSQUERY})
    AND (CAST(:cleaning_types AS text[]) IS NULL OR c.cleaning_type = ANY (CAST(:cleaning_types AS text[])))
    AND (CAST(:min_price AS numeric) IS NULL OR c.price >= CAST(:min_price AS numeric))
    AND (CAST(:max_price AS numeric) IS NULL OR c.price <= CAST(:max_price AS numeric))
    AND (CAST(:include_taken AS boolean) OR NOT EXISTS (
        SELECT 1 FROM user_offers_for_cleanings o
        WHERE o.cleaning_id = c.id AND o.status IN ('accepted', 'completed')
        OFFSET 0
    ))
"""

_C_COLUMNS = ", ".join(f"c.{column}" for column in CLEANING_COLUMNS.split(", "))
_ITEM_JSON = model_json(
    CleaningSearchItem,
    {**{field: field for field in CleaningSearchItem.model_fields}, "owner": user_json(prefix="owner_")},
)


def _answer(order: str, *, window: str = "", edge: str = "") -> str:
    """The page's rows (`page_rows`, at most a page and one) with their owners, each as its item's
    JSON and its sort keys (and `window`'s columns from `edge`), in `order`."""
    return f"""
    SELECT {_ITEM_JSON} AS item, id, created_at, price::text AS price_text, rank{window}
    FROM (
        SELECT r.*, {user_with_profile_columns(prefix="owner_")}
        FROM page_rows r
        LEFT JOIN users u ON u.id = r.owner
        LEFT JOIN profiles p ON p.user_id = u.id
    ) AS found{edge}
    ORDER BY {order};
"""


def _ordered_search(*, order: str, after: str) -> str:
    return f"""
    WITH page_rows AS MATERIALIZED (
        SELECT {_C_COLUMNS}, NULL::float8 AS rank
        FROM cleanings c
        WHERE {_FILTERS}
          AND (CAST(:after_id AS integer) IS NULL OR {after})
        ORDER BY {", ".join(f"c.{key}" for key in order.split(", "))}
        LIMIT :limit
    )
    {_answer(order)}"""


SEARCH_NEWEST_QUERY = _ordered_search(
    order="created_at DESC, id DESC",
    after="(c.created_at, c.id) < (CAST(:after_created_at AS timestamptz), CAST(:after_id AS integer))",
)
SEARCH_PRICE_ASC_QUERY = _ordered_search(
    order="price, id", after="(c.price, c.id) > (CAST(:after_price AS numeric), CAST(:after_id AS integer))"
)
SEARCH_PRICE_DESC_QUERY = _ordered_search(
    order="price DESC, id DESC",
    after="(c.price, c.id) < (CAST(:after_price AS numeric), CAST(:after_id AS integer))",
)

_WINDOW_COLUMNS = ", e.window_size, e.window_created_at, e.window_id, e.top_created_at, e.top_id"
SEARCH_RELEVANCE_QUERY = f"""
    WITH window_rows AS MATERIALIZED (
        SELECT id, created_at, ts_rank(search_vector, {_TSQUERY})::float8 AS rank
        FROM (
            SELECT c.id, c.created_at, c.search_vector
            FROM cleanings c
            WHERE {_FILTERS}
              AND (CAST(:top_id AS integer) IS NULL
                   OR (c.created_at, c.id) <= (CAST(:top_created_at AS timestamptz), CAST(:top_id AS integer)))
            ORDER BY c.created_at DESC, c.id DESC
            LIMIT :window_limit
        ) AS newest
        -- The oldest member bounds the window after the scan, not in it (see the module's docstring).
        WHERE CAST(:window_id AS integer) IS NULL
           OR (created_at, id) >= (CAST(:window_created_at AS timestamptz), CAST(:window_id AS integer))
    ), edge AS (
        SELECT (SELECT count(*) FROM window_rows) AS window_size,
               oldest.created_at AS window_created_at, oldest.id AS window_id,
               newest.created_at AS top_created_at, newest.id AS top_id
        FROM (SELECT created_at, id FROM window_rows ORDER BY created_at, id LIMIT 1) AS oldest,
             (SELECT created_at, id FROM window_rows ORDER BY created_at DESC, id DESC LIMIT 1) AS newest
    ), page_keys AS MATERIALIZED (
        SELECT w.id, w.rank
        FROM window_rows w
        WHERE CAST(:after_id AS integer) IS NULL
           OR (w.rank, w.id) < (CAST(:after_rank AS float8), CAST(:after_id AS integer))
        ORDER BY w.rank DESC, w.id DESC
        LIMIT :limit
    ), page_rows AS MATERIALIZED (
        SELECT {_C_COLUMNS}, k.rank
        FROM page_keys k
        JOIN cleanings c ON c.id = k.id
    )
    {_answer("rank DESC, id DESC", window=_WINDOW_COLUMNS, edge=" CROSS JOIN edge e")}"""

SEARCH_QUERIES = {
    SearchSort.relevance: SEARCH_RELEVANCE_QUERY,
    SearchSort.newest: SEARCH_NEWEST_QUERY,
    SearchSort.price_asc: SEARCH_PRICE_ASC_QUERY,
    SearchSort.price_desc: SEARCH_PRICE_DESC_QUERY,
}


@dataclass(frozen=True, slots=True)
class SearchPage:
    """A page: the JSON array of its items (written by PostgreSQL) and the cursor of the next."""

    items_json: str
    next_cursor: SearchCursor | None


class SearchRepository(BaseRepository):
    async def search_cleanings(
        self,
        *,
        filters: SearchFilters,
        sort: SearchSort,
        limit: int,
        cursor: SearchCursor | None = None,
    ) -> SearchPage:
        """A page of the cleanings that match `filters`, in `sort` order, after `cursor` (which the
        caller has checked belongs to this search and sort).

        SearchQueryWithoutWordsError: `q` has no word to look for (only stop words, punctuation);
        SearchQueryOnlyExcludesError: it only excludes words (`-oven`), which no index can look up;
        both before anything is read.
        """
        values = self._values(filters=filters, sort=sort, limit=limit, cursor=cursor)
        async with self.db.transaction():
            record = await self.db.fetch_one(query=CHECK_SEARCH_QUERY, values={"q": filters.q})
            assert record is not None  # a SELECT without FROM
            if filters.q is not None and not record["terms"]:
                raise SearchQueryWithoutWordsError
            if filters.q is not None and record["indexable"] == "T":  # querytree's "no condition"
                raise SearchQueryOnlyExcludesError
            records = await self.db.fetch_all(query=SEARCH_QUERIES[sort], values=values)
        rows = [record._mapping for record in records]
        items = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = self._cursor_after(items[-1], filters=filters, sort=sort, cursor=cursor)
        return SearchPage(items_json="[" + ",".join(row["item"] for row in items) + "]", next_cursor=next_cursor)

    @staticmethod
    def _values(*, filters: SearchFilters, sort: SearchSort, limit: int, cursor: SearchCursor | None) -> dict[str, Any]:
        types = sorted({str(kind) for kind in filters.cleaning_types}) if filters.cleaning_types else None
        values: dict[str, Any] = {
            "q": filters.q,
            "cleaning_types": types,
            "min_price": filters.min_price,
            "max_price": filters.max_price,
            "include_taken": filters.include is SearchInclude.all,
            "limit": limit + 1,  # one more than a page: whether there is a next one
            "after_id": cursor.id if cursor else None,
        }
        if sort is SearchSort.relevance:
            values["after_rank"] = cursor.rank if cursor else None
            values["window_created_at"] = cursor.window_created_at if cursor else None
            values["window_id"] = cursor.window_id if cursor else None
            values["top_created_at"] = cursor.top_created_at if cursor else None
            values["top_id"] = cursor.top_id if cursor else None
            values["window_limit"] = SEARCH_RELEVANCE_WINDOW
        elif sort is SearchSort.newest:
            values["after_created_at"] = cursor.created_at if cursor else None
        else:
            values["after_price"] = Decimal(cursor.price) if cursor and cursor.price else None
        return values

    @staticmethod
    def _cursor_after(
        row: Any, *, filters: SearchFilters, sort: SearchSort, cursor: SearchCursor | None
    ) -> SearchCursor:
        key: dict[str, Any] = {"sort": sort, "search": filters.fingerprint(sort), "id": row["id"]}
        if sort is SearchSort.relevance:
            key["rank"] = row["rank"]
            if cursor is not None:  # the window the first page fixed
                key["top_created_at"], key["top_id"] = cursor.top_created_at, cursor.top_id
                key["window_created_at"], key["window_id"] = cursor.window_created_at, cursor.window_id
            else:
                key["top_created_at"], key["top_id"] = row["top_created_at"], row["top_id"]
                if row["window_size"] >= SEARCH_RELEVANCE_WINDOW:  # full: its oldest member bounds it
                    key["window_created_at"], key["window_id"] = row["window_created_at"], row["window_id"]
        elif sort is SearchSort.newest:
            key["created_at"] = row["created_at"]
        else:
            key["price"] = row["price_text"]
        return SearchCursor.model_validate(key)
