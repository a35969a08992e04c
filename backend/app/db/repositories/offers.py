"""Offers. Every change to the offers of a cleaning runs in a transaction that first locks the
cleaning's row, so that two changes at once (two tabs accepting two offers, an accept and a
cancel, an accept and a delete of the cleaning, two new offers) run one after the other, each
seeing what the other did. The database's own constraints (one offer per user and cleaning, one
accepted offer per cleaning) stand behind that. The mail each change is told by (a new offer to
the owner, a decision to the cleaners, a backing out to the owner) is written to the outbox in
the same transaction (app/db/repositories/notifications.py): it is sent if and only if the
change commits."""

from datetime import UTC, datetime
from typing import Literal, overload

import asyncpg
from databases import Database
from databases.interfaces import Record

from app.db import etags, lone_queries
from app.db.errors import (
    CleaningAlreadyHasAcceptedOfferError,
    CleaningNotFoundError,
    CleaningOwnerLeftError,
    OfferAlreadyExistsError,
    OfferNotAcceptedError,
    OfferNotFoundError,
    OfferNotPendingError,
)
from app.db.json_rows import NULL, json_array, model_json
from app.db.repositories.base import MAX_ID, BaseRepository, as_dict
from app.db.repositories.cleanings import CLEANING_HAS_ACCEPTED_OFFER_QUERY, LOCK_CLEANING_QUERY
from app.db.repositories.notifications import NotificationsRepository
from app.db.repositories.outbox import MailKind
from app.db.repositories.users import UsersRepository, user_from_row, user_json, user_with_profile_columns
from app.models.cleaning import AnyCleaning
from app.models.offer import OfferCreate, OfferInDB, OfferPublic, OfferUpdate
from app.models.user import AnyUser, UserPublic

OFFER_FIELDS = ("user_id", "cleaning_id", "status", "created_at", "updated_at")
OFFER_COLUMNS = ", ".join(OFFER_FIELDS)

CREATE_OFFER_FOR_CLEANING_QUERY = f"""
    INSERT INTO user_offers_for_cleanings (cleaning_id, user_id, status)
    VALUES (:cleaning_id, :user_id, 'pending')
    RETURNING {OFFER_COLUMNS};
"""

# Whether the cleaning's owner has deleted their account (a kept cleaning, owned by a tombstone).
OWNER_LEFT_QUERY = """
    SELECT u.deleted_at IS NOT NULL FROM cleanings c JOIN users u ON u.id = c.owner WHERE c.id = :cleaning_id;
"""

# Oldest first, a page of :limit (NULL: all) after the cursor (created_at, user_id) of the last
# offer of the page before (the epoch and 0: from the first).
LIST_OFFERS_FOR_CLEANING_QUERY = f"""
    SELECT {OFFER_COLUMNS}
    FROM user_offers_for_cleanings
    WHERE cleaning_id = :cleaning_id AND (created_at, user_id) > (:after_created_at, :after_user_id)
    ORDER BY created_at, user_id
    LIMIT :limit;
"""

# The same with the users and their profiles: one query, however many offers there are.
LIST_POPULATED_OFFERS_FOR_CLEANING_QUERY = f"""
    SELECT {", ".join(f"o.{field}" for field in OFFER_FIELDS)},
           {user_with_profile_columns(prefix="offerer_")},
           o.xmin AS row_version, u.xmin AS offerer_row_version, p.xmin AS offerer_profile_row_version
    FROM user_offers_for_cleanings o
    JOIN users u ON u.id = o.user_id
    LEFT JOIN profiles p ON p.user_id = u.id
    WHERE o.cleaning_id = :cleaning_id AND (o.created_at, o.user_id) > (:after_created_at, :after_user_id)
    ORDER BY o.created_at, o.user_id
    LIMIT :limit;
"""

# The same page as the JSON of its offers, written by PostgreSQL (app/db/json_rows.py): what the
# list route answers.
_OFFER_JSON = model_json(
    OfferPublic,
    {**{field: field for field in OFFER_FIELDS}, "user": user_json(prefix="offerer_"), "cleaning": NULL},
)
LIST_POPULATED_OFFERS_FOR_CLEANING_JSON_QUERY = f"""
    SELECT {json_array(_OFFER_JSON, order_by="created_at, user_id")} AS page
    FROM ({LIST_POPULATED_OFFERS_FOR_CLEANING_QUERY.strip().removesuffix(";")}) AS page_rows;
"""

# What the list route answers, in one statement: the cleaning's owner (no row: no such cleaning),
# the page's ETag (app/db/etags.py) and, if the caller is the owner and their copy is not current,
# the page's JSON. An offer's part of the tag: its row (named by its user: the cleaning is the
# same), its user's and their profile's.
_OFFER_KEY = " || ".join(
    [
        etags.row_key(id="user_id", updated_at="updated_at", version="row_version"),
        etags.row_key(id="offerer_id", updated_at="offerer_updated_at", version="offerer_row_version"),
        etags.row_key(
            id="offerer_profile_id", updated_at="offerer_profile_updated_at", version="offerer_profile_row_version"
        ),
    ]
)
LIST_TAGGED_OFFERS_FOR_CLEANING_QUERY = f"""
    WITH listed AS (
        SELECT owner FROM cleanings WHERE id = :cleaning_id
    ), page_rows AS MATERIALIZED ({LIST_POPULATED_OFFERS_FOR_CLEANING_QUERY.strip().removesuffix(";")}),
    tagged AS (
        SELECT {etags.etag_of_rows(_OFFER_KEY, order_by="created_at, user_id")} AS etag FROM page_rows
    )
    SELECT listed.owner, tagged.etag,
           CASE WHEN listed.owner IS DISTINCT FROM :reader_id OR {etags.matched("tagged.etag")} THEN NULL
                ELSE (SELECT {json_array(_OFFER_JSON, order_by="created_at, user_id")} FROM page_rows) END AS body
    FROM listed CROSS JOIN tagged;
"""

GET_OFFER_FOR_CLEANING_FROM_USER_QUERY = f"""
    SELECT {OFFER_COLUMNS}
    FROM user_offers_for_cleanings
    WHERE cleaning_id = :cleaning_id AND user_id = :user_id;
"""

# Locks the offer's row: a rescind (a DELETE) of it waits until the accepting transaction ends.
GET_OFFER_FOR_UPDATE_QUERY = f"""
    SELECT {OFFER_COLUMNS}
    FROM user_offers_for_cleanings
    WHERE cleaning_id = :cleaning_id AND user_id = :user_id
    FOR UPDATE;
"""

ACCEPT_OFFER_QUERY = f"""
    UPDATE user_offers_for_cleanings
    SET status = 'accepted'
    WHERE cleaning_id = :cleaning_id AND user_id = :user_id AND status = 'pending'
    RETURNING {OFFER_COLUMNS};
"""

REJECT_OTHER_PENDING_OFFERS_QUERY = """
    UPDATE user_offers_for_cleanings
    SET status = 'rejected'
    WHERE cleaning_id = :cleaning_id AND user_id <> :user_id AND status = 'pending'
    RETURNING user_id;
"""

CANCEL_OFFER_QUERY = f"""
    UPDATE user_offers_for_cleanings
    SET status = 'cancelled'
    WHERE cleaning_id = :cleaning_id AND user_id = :user_id AND status = 'accepted'
    RETURNING {OFFER_COLUMNS};
"""

REOPEN_REJECTED_OFFERS_QUERY = """
    UPDATE user_offers_for_cleanings
    SET status = 'pending'
    WHERE cleaning_id = :cleaning_id AND status = 'rejected';
"""

RESCIND_OFFER_QUERY = """
    DELETE FROM user_offers_for_cleanings
    WHERE cleaning_id = :cleaning_id AND user_id = :user_id AND status = 'pending'
    RETURNING cleaning_id;
"""

MARK_OFFER_COMPLETED_QUERY = f"""
    UPDATE user_offers_for_cleanings
    SET status = 'completed'
    WHERE cleaning_id = :cleaning_id AND user_id = :user_id AND status = 'accepted'
    RETURNING {OFFER_COLUMNS};
"""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # before every offer


def _page_values(cleaning_id: int, *, limit: int | None, after: tuple[datetime, int] | None) -> dict[str, object]:
    """The values of the queries of a page of a cleaning's offers."""
    after_created_at, after_user_id = after or (EPOCH, 0)
    return {
        "cleaning_id": cleaning_id,
        "limit": limit,
        "after_created_at": after_created_at,
        "after_user_id": after_user_id,
    }


def _offer(record: Record) -> OfferInDB:
    return OfferInDB.model_validate(as_dict(record))


class OffersRepository(BaseRepository):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.users_repo = UsersRepository(db)
        self.notifications = NotificationsRepository(db)

    async def create_offer_for_cleaning(self, *, new_offer: OfferCreate) -> OfferInDB:
        """A pending offer, told to the cleaning's owner; OfferAlreadyExistsError if the user has
        one on this cleaning already."""
        values = {"cleaning_id": new_offer.cleaning_id, "user_id": new_offer.user_id}
        try:
            async with self.db.transaction():
                # Offers on one cleaning one at a time: the owner's digest is joined or started by one.
                await self._lock_cleaning(new_offer.cleaning_id)
                # (an account's deletion locks its cleanings first: one that committed is seen here)
                if await self.db.fetch_val(query=OWNER_LEFT_QUERY, values={"cleaning_id": new_offer.cleaning_id}):
                    raise CleaningOwnerLeftError
                record = await self.db.fetch_one(query=CREATE_OFFER_FOR_CLEANING_QUERY, values=values)
                await self.notifications.queue_offer_received(
                    cleaning_id=new_offer.cleaning_id, offerer_id=new_offer.user_id
                )
        except asyncpg.UniqueViolationError as exc:  # the primary key: one offer per user and cleaning
            raise OfferAlreadyExistsError from exc
        except asyncpg.ForeignKeyViolationError as exc:  # (the cleaning is locked: its offerer went meanwhile)
            raise CleaningNotFoundError from exc
        assert record is not None  # INSERT ... RETURNING always returns the row
        return _offer(record)

    @overload
    async def list_offers_for_cleaning(
        self,
        *,
        cleaning: AnyCleaning,
        populate: Literal[True] = True,
        limit: int | None = None,
        after: tuple[datetime, int] | None = None,
    ) -> list[OfferPublic]: ...
    @overload
    async def list_offers_for_cleaning(
        self,
        *,
        cleaning: AnyCleaning,
        populate: Literal[False],
        limit: int | None = None,
        after: tuple[datetime, int] | None = None,
    ) -> list[OfferInDB]: ...
    async def list_offers_for_cleaning(
        self,
        *,
        cleaning: AnyCleaning,
        populate: bool = True,
        limit: int | None = None,
        after: tuple[datetime, int] | None = None,
    ) -> list[OfferPublic] | list[OfferInDB]:
        """The cleaning's offers, oldest first; with each offering user embedded unless `populate=False`.

        All of them (the tutorial's call), or a page of `limit` after the offer whose
        (created_at, user_id) is `after` (the last one of the page before).
        """
        values = _page_values(cleaning.id, limit=limit, after=after)
        if not populate:
            return [_offer(record) for record in await self.db.fetch_all(LIST_OFFERS_FOR_CLEANING_QUERY, values)]
        offers = []
        for record in await self.db.fetch_all(LIST_POPULATED_OFFERS_FOR_CLEANING_QUERY, values):
            row = as_dict(record)
            user = user_from_row(row, prefix="offerer_")
            offer = {field: row[field] for field in OFFER_FIELDS}
            offers.append(OfferPublic.model_validate({**offer, "user": UserPublic.from_user(user) if user else None}))
        return offers

    async def list_offers_for_cleaning_json(
        self, *, cleaning: AnyCleaning, limit: int | None = None, after: tuple[datetime, int] | None = None
    ) -> str:
        """The page `list_offers_for_cleaning` reads (populated), as the JSON of its list of offers."""
        values = _page_values(cleaning.id, limit=limit, after=after)
        page: str = await self.db.fetch_val(query=LIST_POPULATED_OFFERS_FOR_CLEANING_JSON_QUERY, values=values)
        return page

    async def list_tagged_offers_for_cleaning(
        self,
        *,
        cleaning_id: int,
        reader: AnyUser,
        limit: int | None = None,
        after: tuple[datetime, int] | None = None,
        if_none_match: str = "",
    ) -> tuple[int | None, etags.Tagged] | None:
        """The cleaning's owner, and the page `list_offers_for_cleaning_json` writes with its ETag,
        in one statement; the JSON is None unless `reader` owns the cleaning and `if_none_match`
        does not name the tag. None: no such cleaning."""
        if not 1 <= cleaning_id <= MAX_ID:
            return None
        values = {
            **_page_values(cleaning_id, limit=limit, after=after),
            "reader_id": reader.id,
            "etag_seed": etags.seed(LIST_TAGGED_OFFERS_FOR_CLEANING_QUERY, reader.id, cleaning_id, limit, after),
            "if_none_match": if_none_match,
        }
        record = await lone_queries.fetch_row(self.db, LIST_TAGGED_OFFERS_FOR_CLEANING_QUERY, values)
        if record is None:
            return None
        return record["owner"], etags.Tagged(etag=record["etag"], body=record["body"])

    async def get_offer_for_cleaning_from_user(self, *, cleaning: AnyCleaning, user: AnyUser) -> OfferInDB | None:
        values = {"cleaning_id": cleaning.id, "user_id": user.id}
        record = await self.db.fetch_one(query=GET_OFFER_FOR_CLEANING_FROM_USER_QUERY, values=values)
        return _offer(record) if record else None

    async def populate_offer(self, *, offer: OfferInDB) -> OfferPublic:
        """The offer with its user embedded (the cleaning is left out, as in the tutorial)."""
        user = await self.users_repo.get_user_by_id(user_id=offer.user_id)
        return OfferPublic.model_validate({**offer.model_dump(), "user": user})

    async def _lock_cleaning(self, cleaning_id: int) -> None:
        if await self.db.fetch_val(query=LOCK_CLEANING_QUERY, values={"cleaning_id": cleaning_id}) is None:
            raise CleaningNotFoundError

    async def _why_not(self, values: dict[str, int], error: type[Exception]) -> Exception:
        """The offer a conditional write missed is gone (OfferNotFoundError), or in another state (`error`)."""
        exists = await self.db.fetch_one(query=GET_OFFER_FOR_CLEANING_FROM_USER_QUERY, values=values)
        return error() if exists else OfferNotFoundError()

    async def accept_offer(self, *, offer: OfferInDB, offer_update: OfferUpdate | None = None) -> OfferInDB:
        """Accept a pending offer and reject every other pending offer of the cleaning, at once.

        OfferNotPendingError if the offer is no longer pending, CleaningAlreadyHasAcceptedOfferError
        if another offer was accepted first. (`offer_update` is the tutorial's argument: accepting
        always sets "accepted".)
        """
        values = {"cleaning_id": offer.cleaning_id, "user_id": offer.user_id}
        try:
            async with self.db.transaction():
                await self._lock_cleaning(offer.cleaning_id)
                current = await self.db.fetch_one(query=GET_OFFER_FOR_UPDATE_QUERY, values=values)
                if current is None:
                    raise OfferNotFoundError
                if current["status"] != "pending":
                    raise OfferNotPendingError
                has_accepted = {"cleaning_id": offer.cleaning_id}
                if await self.db.fetch_val(query=CLEANING_HAS_ACCEPTED_OFFER_QUERY, values=has_accepted):
                    raise CleaningAlreadyHasAcceptedOfferError
                record = await self.db.fetch_one(query=ACCEPT_OFFER_QUERY, values=values)
                if record is None:  # cannot happen while the row is locked; never a 500 if it does
                    raise OfferNotPendingError
                rejected = await self.db.fetch_all(query=REJECT_OTHER_PENDING_OFFERS_QUERY, values=values)
                await self.notifications.queue_to_cleaners(
                    kind=MailKind.offer_accepted, cleaning_id=offer.cleaning_id, cleaner_ids=[offer.user_id]
                )
                await self.notifications.queue_to_cleaners(
                    kind=MailKind.offer_rejected,
                    cleaning_id=offer.cleaning_id,
                    cleaner_ids=[int(row["user_id"]) for row in rejected],
                )
        except asyncpg.UniqueViolationError as exc:  # the index that allows one accepted offer per cleaning
            raise CleaningAlreadyHasAcceptedOfferError from exc
        return _offer(record)

    async def cancel_offer(self, *, offer: OfferInDB, offer_update: OfferUpdate | None = None) -> OfferInDB:
        """Cancel an accepted offer (its cleaner backs out); the rejected offers are pending again."""
        values = {"cleaning_id": offer.cleaning_id, "user_id": offer.user_id}
        async with self.db.transaction():
            await self._lock_cleaning(offer.cleaning_id)
            record = await self.db.fetch_one(query=CANCEL_OFFER_QUERY, values=values)
            if record is None:
                raise await self._why_not(values, OfferNotAcceptedError)
            await self.db.execute(query=REOPEN_REJECTED_OFFERS_QUERY, values={"cleaning_id": offer.cleaning_id})
            await self.notifications.queue_to_owner(
                kind=MailKind.offer_cancelled, cleaning_id=offer.cleaning_id, cleaner_id=offer.user_id
            )
        return _offer(record)

    async def rescind_offer(self, *, offer: OfferInDB) -> int:
        """Withdraw a pending offer (it is deleted); the id of its cleaning."""
        values = {"cleaning_id": offer.cleaning_id, "user_id": offer.user_id}
        cleaning_id = await self.db.fetch_val(query=RESCIND_OFFER_QUERY, values=values)
        if cleaning_id is None:
            raise await self._why_not(values, OfferNotPendingError)
        return int(cleaning_id)

    async def mark_offer_completed(self, *, cleaning: AnyCleaning, cleaner: AnyUser) -> OfferInDB | None:
        """Mark the cleaner's accepted offer completed; None if it is not (or no longer) accepted."""
        values = {"cleaning_id": cleaning.id, "user_id": cleaner.id}
        record = await self.db.fetch_one(query=MARK_OFFER_COMPLETED_QUERY, values=values)
        return _offer(record) if record else None
