from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, Literal, TypeVar, overload

from databases import Database
from pydantic import BaseModel

from app.db import etags, lone_queries
from app.db.errors import CleaningHasAcceptedOfferError, InvalidCleaningTypeError
from app.db.json_rows import json_array, model_json
from app.db.repositories.base import MAX_ID, BaseRepository, as_dict
from app.db.repositories.users import UsersRepository, user_from_row, user_json, user_with_profile_columns
from app.models.cleaning import (
    AnyCleaning,
    CleaningCreate,
    CleaningInDB,
    CleaningPublic,
    CleaningType,
    CleaningUpdate,
)
from app.models.core import construct
from app.models.user import AnyUser, UserPublic

CLEANING_COLUMNS = "id, name, description, price, cleaning_type, owner, created_at, updated_at"

CleaningT = TypeVar("CleaningT", bound=CleaningPublic)

# The columns whose stored type is not the field's: numeric to float, text to CleaningType.
_CONVERTED_COLUMNS: dict[str, Callable[[Any], Any]] = {"price": float, "cleaning_type": CleaningType}


def cleaning_from_row(model: type[CleaningT], row: Mapping[str, Any], **fields: Any) -> CleaningT:
    """A cleaning (CleaningPublic or a subclass) from its columns in `row`, and `fields` (its owner).

    Built as stored, not validated again (as user_from_row builds users): only the two columns
    whose type is not the field's are converted, as validation converts them; a feed page has
    twenty (tests/test_models.py checks it builds what validation would).
    """
    values = {}
    for field in _fields(model):
        value = fields[field] if field in fields else row[field]
        if value is not None and field in _CONVERTED_COLUMNS:
            value = _CONVERTED_COLUMNS[field](value)
        values[field] = value
    return construct(model, values)


@cache
def _fields(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(model.model_fields)


CREATE_CLEANING_QUERY = f"""
    INSERT INTO cleanings (name, description, price, cleaning_type, owner)
    VALUES (:name, :description, :price, :cleaning_type, :owner)
    RETURNING {CLEANING_COLUMNS};
"""

GET_CLEANING_BY_ID_QUERY = f"""
    SELECT {CLEANING_COLUMNS}
    FROM cleanings
    WHERE id = :id;
"""

# The cleaning with its owner and the owner's profile, in one round trip (Part 17 embeds them).
GET_POPULATED_CLEANING_BY_ID_QUERY = f"""
    SELECT {", ".join(f"c.{column}" for column in CLEANING_COLUMNS.split(", "))},
           {user_with_profile_columns(prefix="owner_")}
    FROM cleanings c
    LEFT JOIN users u ON u.id = c.owner
    LEFT JOIN profiles p ON p.user_id = u.id
    WHERE c.id = :id;
"""


class _CleaningWithOwner(CleaningPublic):
    """What GET by id writes: a CleaningPublic whose owner is the embedded user (json_rows writes
    no unions); its fields, their order and their JSON are CleaningPublic's."""

    owner: UserPublic | None = None


# The same cleaning as GET /api/cleanings/{id}/ answers it: its ETag (app/db/etags.py) and, unless
# the client's copy is current, its JSON written by PostgreSQL (app/db/json_rows.py).
_CLEANING_WITH_OWNER_JSON = model_json(
    _CleaningWithOwner,
    {**{field: field for field in CleaningPublic.model_fields}, "owner": user_json(prefix="owner_")},
)
_CLEANING_WITH_OWNER_KEY = " || ".join(
    etags.row_key(id=f"{alias}.id", updated_at=f"{alias}.updated_at", version=f"{alias}.xmin") for alias in "cup"
)
GET_TAGGED_CLEANING_BY_ID_QUERY = f"""
    SELECT etag,
           CASE WHEN {etags.matched("etag")} THEN NULL ELSE {_CLEANING_WITH_OWNER_JSON} END AS body
    FROM (
        SELECT {", ".join(f"c.{column}" for column in CLEANING_COLUMNS.split(", "))},
               {user_with_profile_columns(prefix="owner_")},
               {etags.etag_of_row(_CLEANING_WITH_OWNER_KEY)} AS etag
        FROM cleanings c
        LEFT JOIN users u ON u.id = c.owner
        LEFT JOIN profiles p ON p.user_id = u.id
        WHERE c.id = :id
    ) AS found;
"""

GET_CLEANING_BY_ID_FOR_UPDATE_QUERY = f"""
    SELECT {CLEANING_COLUMNS}
    FROM cleanings
    WHERE id = :id
    FOR UPDATE;
"""

# A page of a user's cleanings, by id, after a cursor (0: from the first); LIMIT NULL is no limit.
LIST_ALL_USER_CLEANINGS_QUERY = f"""
    SELECT {CLEANING_COLUMNS}
    FROM cleanings
    WHERE owner = :owner AND id > :after_id
    ORDER BY id
    LIMIT :limit;
"""

# The same page as the route answers it: its ETag and, unless the client's copy is current, its
# JSON, written by PostgreSQL (each cleaning as CleaningPublic with the owner's id writes it).
_CLEANING_JSON = model_json(CleaningInDB, {field: field for field in CleaningInDB.model_fields})
_CLEANING_KEY = etags.row_key(id="id", updated_at="updated_at", version="row_version")
LIST_TAGGED_USER_CLEANINGS_QUERY = f"""
    WITH page_rows AS MATERIALIZED (
        SELECT {CLEANING_COLUMNS}, xmin AS row_version
        FROM cleanings
        WHERE owner = :owner AND id > :after_id
        ORDER BY id
        LIMIT :limit
    ), tagged AS (
        SELECT {etags.etag_of_rows(_CLEANING_KEY, order_by="id")} AS etag
        FROM page_rows
    )
    SELECT etag,
           CASE WHEN {etags.matched("etag")} THEN NULL
                ELSE (SELECT {json_array(_CLEANING_JSON, order_by="id")} FROM page_rows) END AS body
    FROM tagged;
"""

UPDATE_CLEANING_BY_ID_QUERY = f"""
    UPDATE cleanings
    SET name = :name,
        description = :description,
        price = :price,
        cleaning_type = :cleaning_type
    WHERE id = :id
    RETURNING {CLEANING_COLUMNS};
"""

LOCK_CLEANING_QUERY = """
    SELECT id FROM cleanings WHERE id = :cleaning_id FOR UPDATE;
"""

CLEANING_HAS_ACCEPTED_OFFER_QUERY = """
    SELECT EXISTS (
        SELECT 1 FROM user_offers_for_cleanings
        WHERE cleaning_id = :cleaning_id AND status IN ('accepted', 'completed')
    );
"""

DELETE_CLEANING_BY_ID_QUERY = """
    DELETE FROM cleanings
    WHERE id = :id
    RETURNING id;
"""


class CleaningsRepository(BaseRepository):
    """All database actions associated with the Cleaning resource."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.users_repo = UsersRepository(db)

    async def create_cleaning(self, *, new_cleaning: CleaningCreate, requesting_user: AnyUser) -> CleaningInDB:
        values = {**new_cleaning.model_dump(), "owner": requesting_user.id}
        record = await self.db.fetch_one(query=CREATE_CLEANING_QUERY, values=values)
        assert record is not None  # INSERT ... RETURNING always returns the row
        return CleaningInDB.model_validate(as_dict(record))

    @overload
    async def get_cleaning_by_id(
        self, *, id: int, requesting_user: AnyUser | None = None, populate: Literal[True] = True
    ) -> CleaningPublic | None: ...
    @overload
    async def get_cleaning_by_id(
        self, *, id: int, requesting_user: AnyUser | None = None, populate: Literal[False]
    ) -> CleaningInDB | None: ...
    async def get_cleaning_by_id(
        self, *, id: int, requesting_user: AnyUser | None = None, populate: bool = True
    ) -> CleaningPublic | CleaningInDB | None:
        """The cleaning, with its owner embedded (or, with `populate=False`, the owner's id).

        Any logged-in user may read any cleaning: that is how cleaners find work, so
        `requesting_user` (the tutorial's parameter) restricts nothing.
        """
        if not 1 <= id <= MAX_ID:
            return None
        if not populate:
            record = await self.db.fetch_one(query=GET_CLEANING_BY_ID_QUERY, values={"id": id})
            return CleaningInDB.model_validate(as_dict(record)) if record else None
        record = await self.db.fetch_one(query=GET_POPULATED_CLEANING_BY_ID_QUERY, values={"id": id})
        if record is None:
            return None
        row = record._mapping
        owner = user_from_row(row, prefix="owner_")
        return cleaning_from_row(CleaningPublic, row, owner=UserPublic.from_user(owner) if owner else None)

    async def get_tagged_cleaning_by_id(self, *, id: int, reader: AnyUser, if_none_match: str) -> etags.Tagged | None:
        """The cleaning as JSON, its owner embedded, and its ETag for `reader`; the JSON is None
        when `if_none_match` (app.api.conditional.if_none_match) names the tag. None: no such cleaning."""
        if not 1 <= id <= MAX_ID:
            return None
        values = {
            "id": id,
            "etag_seed": etags.seed(GET_TAGGED_CLEANING_BY_ID_QUERY, reader.id, id),
            "if_none_match": if_none_match,
        }
        record = await lone_queries.fetch_row(self.db, GET_TAGGED_CLEANING_BY_ID_QUERY, values)
        return etags.Tagged(etag=record["etag"], body=record["body"]) if record else None

    async def populate_cleaning(
        self, *, cleaning: CleaningInDB, requesting_user: AnyUser | None = None
    ) -> CleaningPublic:
        """The cleaning with its owner (and the owner's profile) embedded."""
        owner = await self.users_repo.get_user_by_id(user_id=cleaning.owner) if cleaning.owner else None
        return CleaningPublic.model_validate({**cleaning.model_dump(exclude={"owner"}), "owner": owner})

    async def list_all_user_cleanings(
        self, *, requesting_user: AnyUser, limit: int | None = None, after_id: int = 0
    ) -> list[CleaningInDB]:
        """The user's cleanings in the order they were posted: all of them (the tutorial's call), or
        a page of `limit` after the cleaning `after_id` (the last one of the page before)."""
        values = {"owner": requesting_user.id, "after_id": after_id, "limit": limit}
        records = await self.db.fetch_all(query=LIST_ALL_USER_CLEANINGS_QUERY, values=values)
        return [CleaningInDB.model_validate(as_dict(record)) for record in records]

    async def list_tagged_user_cleanings(
        self, *, requesting_user: AnyUser, limit: int | None = None, after_id: int = 0, if_none_match: str = ""
    ) -> etags.Tagged:
        """The page `list_all_user_cleanings` reads, as JSON, and its ETag; the JSON is None when
        `if_none_match` names the tag."""
        values = {
            "owner": requesting_user.id,
            "after_id": after_id,
            "limit": limit,
            "etag_seed": etags.seed(LIST_TAGGED_USER_CLEANINGS_QUERY, requesting_user.id, limit, after_id),
            "if_none_match": if_none_match,
        }
        record = await lone_queries.fetch_row(self.db, LIST_TAGGED_USER_CLEANINGS_QUERY, values)
        assert record is not None  # an aggregate's one row
        return etags.Tagged(etag=record["etag"], body=record["body"])

    async def update_cleaning(self, *, cleaning: AnyCleaning, cleaning_update: CleaningUpdate) -> CleaningInDB | None:
        """Apply the fields the update sets to the cleaning as it is now; None if it is gone."""
        # Read and write under one row lock, so that two concurrent partial updates both land
        # (the `cleaning` passed in may be stale by now).
        async with self.db.transaction():
            record = await self.db.fetch_one(query=GET_CLEANING_BY_ID_FOR_UPDATE_QUERY, values={"id": cleaning.id})
            if record is None:
                return None
            current = CleaningInDB.model_validate(as_dict(record))
            updated = current.model_copy(update=cleaning_update.model_dump(exclude_unset=True))
            if updated.cleaning_type is None:
                raise InvalidCleaningTypeError
            record = await self.db.fetch_one(
                query=UPDATE_CLEANING_BY_ID_QUERY,
                values=updated.model_dump(include={"id", "name", "description", "price", "cleaning_type"}),
            )
        assert record is not None  # the row is locked: it is still there
        return CleaningInDB.model_validate(as_dict(record))

    async def delete_cleaning_by_id(self, *, cleaning: AnyCleaning) -> int | None:
        """Delete the cleaning and its offers; its id, or None if it was already gone.

        CleaningHasAcceptedOfferError if an offer was accepted (the work is agreed) or completed
        (done and evaluated: the cleaner's evaluation must not vanish with the job). The check
        holds the cleaning's row lock, which accepting an offer takes too.
        """
        async with self.db.transaction():
            locked = await self.db.fetch_val(query=LOCK_CLEANING_QUERY, values={"cleaning_id": cleaning.id})
            if locked is None:
                return None
            values = {"cleaning_id": cleaning.id}
            if await self.db.fetch_val(query=CLEANING_HAS_ACCEPTED_OFFER_QUERY, values=values):
                raise CleaningHasAcceptedOfferError
            deleted_id = await self.db.fetch_val(query=DELETE_CLEANING_BY_ID_QUERY, values={"id": cleaning.id})
        return int(deleted_id) if deleted_id is not None else None
