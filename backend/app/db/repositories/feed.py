"""The activity feed. A page is the `page_chunk_size` newest events before a cursor, in
(event_timestamp, cleaning id) order, newest first: that order is total (a cleaning's update never
has its creation's timestamp), so walking pages with the last item's timestamp and id as the next
cursor repeats and skips nothing, even when many cleanings share one timestamp (rows written in one
transaction do).

Each half (creations, updates) is a range scan of its own index from the cursor, stopped after a
page; the halves are merged and cut to a page; the page's cleanings, owners and owners' profiles
come in the same query. One query per page, whatever the table's size.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.db import etags, lone_queries
from app.db.json_rows import json_array, model_json
from app.db.repositories.base import BaseRepository
from app.db.repositories.cleanings import CLEANING_COLUMNS, cleaning_from_row
from app.db.repositories.users import user_from_row, user_json, user_with_profile_columns
from app.models.feed import CleaningFeedItem
from app.models.user import AnyUser, UserPublic

# The page's events: (cleaning id, event type, event timestamp), the newest before the cursor.
_FEED_EVENTS = """
    WITH events AS (
        (
            SELECT id, 'is_update' AS event_type, updated_at AS event_timestamp
            FROM cleanings
            WHERE updated_at <> created_at AND (updated_at, id) < (:starting_date, :starting_id)
            ORDER BY updated_at DESC, id DESC
            LIMIT :page_chunk_size
        )
        UNION ALL
        (
            SELECT id, 'is_create' AS event_type, created_at AS event_timestamp
            FROM cleanings
            WHERE (created_at, id) < (:starting_date, :starting_id)
            ORDER BY created_at DESC, id DESC
            LIMIT :page_chunk_size
        )
        ORDER BY event_timestamp DESC, id DESC
        LIMIT :page_chunk_size
    )
"""
_CLEANING_SELECT_LIST = ", ".join(f"c.{column}" for column in CLEANING_COLUMNS.split(", "))

FETCH_CLEANING_JOBS_FEED_QUERY = f"""{_FEED_EVENTS.rstrip()}
    SELECT row_number() OVER (ORDER BY e.event_timestamp DESC, e.id DESC) AS row_number,
           e.event_type,
           e.event_timestamp,
           {_CLEANING_SELECT_LIST},
           {user_with_profile_columns(prefix="owner_")},
           c.xmin AS row_version, u.xmin AS owner_row_version, p.xmin AS owner_profile_row_version
    FROM events e
    JOIN cleanings c ON c.id = e.id
    LEFT JOIN users u ON u.id = c.owner
    LEFT JOIN profiles p ON p.user_id = u.id
    ORDER BY e.event_timestamp DESC, e.id DESC;
"""

# The same page as the JSON of its items, written by PostgreSQL (app/db/json_rows.py): what the
# route answers, without decoding forty values a row into models only to encode them again.
_FEED_ITEM_JSON = model_json(
    CleaningFeedItem, {**{field: field for field in CleaningFeedItem.model_fields}, "owner": user_json(prefix="owner_")}
)
FETCH_CLEANING_JOBS_FEED_JSON_QUERY = f"""
    SELECT {json_array(_FEED_ITEM_JSON, order_by="row_number")} AS page
    FROM ({FETCH_CLEANING_JOBS_FEED_QUERY.strip().removesuffix(";")}) AS page_rows;
"""

# The same page as the route answers it: its ETag (app/db/etags.py) and, unless the client's copy
# is current, its JSON. An item's part of the tag: its event (a cleaning's creation or update), the
# cleaning's row, its owner's and the owner's profile's.
_FEED_ITEM_KEY = " || ".join(
    [
        "convert_to(event_type, 'UTF8')",
        etags.row_key(id="id", updated_at="updated_at", version="row_version"),
        etags.row_key(id="owner_id", updated_at="owner_updated_at", version="owner_row_version"),
        etags.row_key(
            id="owner_profile_id", updated_at="owner_profile_updated_at", version="owner_profile_row_version"
        ),
    ]
)
# The page's rows keep only what the tag needs of the owners (ids, updated_at, row versions): the
# owners' JSON is written once per owner, not once per item (a page often shows one owner several
# times), by re-reading them by id in the branch that writes the answer, in the same statement
# (the same snapshot as the tag). A 304 reads no owner twice.
_FEED_PAGE_ROWS = f"""
    SELECT row_number() OVER (ORDER BY e.event_timestamp DESC, e.id DESC) AS row_number,
           e.event_type,
           e.event_timestamp,
           {_CLEANING_SELECT_LIST},
           u.id AS owner_id, u.updated_at AS owner_updated_at,
           p.id AS owner_profile_id, p.updated_at AS owner_profile_updated_at,
           c.xmin AS row_version, u.xmin AS owner_row_version, p.xmin AS owner_profile_row_version
    FROM events e
    JOIN cleanings c ON c.id = e.id
    LEFT JOIN users u ON u.id = c.owner
    LEFT JOIN profiles p ON p.user_id = u.id
"""
_FEED_OWNERS_JSON = f"""
    SELECT owner_id AS embedded_owner_id, {user_json(prefix="owner_")} AS owner_json
    FROM (
        SELECT {user_with_profile_columns(prefix="owner_")}
        FROM users u
        LEFT JOIN profiles p ON p.user_id = u.id
        WHERE u.id IN (SELECT owner_id FROM page_rows)
    ) AS owner_rows
"""
_FEED_ITEM_WITH_OWNER_JSON = model_json(
    CleaningFeedItem,
    {**{field: field for field in CleaningFeedItem.model_fields}, "owner": "COALESCE(owner_json, 'null')"},
)
FETCH_TAGGED_CLEANING_JOBS_FEED_QUERY = f"""{_FEED_EVENTS.rstrip()},
    page_rows AS MATERIALIZED ({_FEED_PAGE_ROWS}),
    tagged AS (SELECT {etags.etag_of_rows(_FEED_ITEM_KEY, order_by="row_number")} AS etag FROM page_rows)
    SELECT etag,
           CASE WHEN {etags.matched("etag")} THEN NULL
                ELSE (SELECT {json_array(_FEED_ITEM_WITH_OWNER_JSON, order_by="row_number")}
                      FROM page_rows
                      LEFT JOIN ({_FEED_OWNERS_JSON}) AS owners
                        ON owners.embedded_owner_id = page_rows.owner_id) END AS body
    FROM tagged;
"""


class FeedRepository(BaseRepository):
    async def fetch_cleaning_jobs_feed(
        self, *, starting_date: datetime, page_chunk_size: int = 20, starting_id: int = 0
    ) -> list[CleaningFeedItem]:
        """The newest events before (`starting_date`, `starting_id`). With `starting_id` 0 (the
        tutorial's call) that is every event strictly older than `starting_date`; with the last
        item's event_timestamp and id, the page right after that item."""
        values = {"starting_date": starting_date, "starting_id": starting_id, "page_chunk_size": page_chunk_size}
        records = await self.db.fetch_all(query=FETCH_CLEANING_JOBS_FEED_QUERY, values=values)
        return [self.populate_cleaning_feed_item(row=record._mapping) for record in records]

    async def fetch_cleaning_jobs_feed_json(
        self, *, starting_date: datetime, page_chunk_size: int = 20, starting_id: int = 0
    ) -> str:
        """The page `fetch_cleaning_jobs_feed` reads, as the JSON of its list of items."""
        values = {"starting_date": starting_date, "starting_id": starting_id, "page_chunk_size": page_chunk_size}
        page: str = await self.db.fetch_val(query=FETCH_CLEANING_JOBS_FEED_JSON_QUERY, values=values)
        return page

    async def fetch_tagged_cleaning_jobs_feed(
        self,
        *,
        starting_date: datetime,
        page_chunk_size: int = 20,
        starting_id: int = 0,
        reader: AnyUser,
        default_cursor: bool = False,
        if_none_match: str = "",
    ) -> etags.Tagged:
        """The page `fetch_cleaning_jobs_feed_json` writes, and its ETag for `reader` and this page;
        the JSON is None when `if_none_match` names the tag. With `default_cursor` (the first page:
        `starting_date` is a moment just ahead of now), the tag leaves `starting_date` out: that
        moment moves with the clock, the page it names does not."""
        cursor = None if default_cursor else starting_date.isoformat()
        values = {
            "starting_date": starting_date,
            "starting_id": starting_id,
            "page_chunk_size": page_chunk_size,
            "etag_seed": etags.seed(
                FETCH_TAGGED_CLEANING_JOBS_FEED_QUERY, reader.id, page_chunk_size, cursor, starting_id
            ),
            "if_none_match": if_none_match,
        }
        # asyncpg's own record: two text values need no `databases` Record around them.
        record = await lone_queries.fetch_row(self.db, FETCH_TAGGED_CLEANING_JOBS_FEED_QUERY, values)
        assert record is not None  # an aggregate's one row
        return etags.Tagged(etag=record["etag"], body=record["body"])

    def populate_cleaning_feed_item(self, *, row: Mapping[str, Any]) -> CleaningFeedItem:
        """The item a row of the feed's query holds (the route answers with the JSON query instead)."""
        owner = user_from_row(row, prefix="owner_")
        return cleaning_from_row(CleaningFeedItem, row, owner=UserPublic.from_user(owner) if owner else None)
