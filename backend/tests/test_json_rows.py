"""JSON written by PostgreSQL (app/db/json_rows.py) is, byte for byte, what pydantic writes for the
same rows: the feed and the list of a cleaning's offers answer with the former, and their clients
must not see a difference."""

from datetime import UTC, datetime, timedelta

import pytest
from databases import Database
from httpx import AsyncClient
from pydantic import BaseModel, Field, TypeAdapter, field_serializer

from app.db.json_rows import model_json
from app.db.repositories.feed import FeedRepository
from app.db.repositories.offers import OffersRepository
from app.models.cleaning import CleaningInDB
from app.models.feed import CleaningFeedItem
from app.models.offer import OfferPublic
from app.models.user import UserPublic

PAGE = TypeAdapter(list[CleaningFeedItem])
OFFERS = TypeAdapter(list[OfferPublic])
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Text that JSON must escape, and text it must not.
AWKWARD = 'quote " backslash \\ newline \n tab \t bell \x07 delete \x7f é ✓ 🧹 \u2028 end'


async def insert_cleaning(
    db: Database, *, name: str, price: str, owner: int | None, created: datetime, updated: datetime | None = None
) -> None:
    # Inserted with explicit timestamps (the trigger only keeps updated_at on UPDATE).
    await db.execute(
        "INSERT INTO cleanings (name, description, price, cleaning_type, owner, created_at, updated_at)"
        " VALUES (:name, :description, CAST(:price AS numeric), :cleaning_type, :owner, :created, :updated)",
        {
            "name": name,
            "description": None if price == "0" else AWKWARD,
            "price": price,
            "cleaning_type": "dust_up" if owner is None else "full_clean",
            "owner": owner,
            "created": created,
            "updated": updated or created,
        },
    )


@pytest.fixture
async def awkward_feed(db: Database, test_user: UserPublic, test_user2: UserPublic, test_user3: UserPublic) -> None:
    """Cleanings with every kind of value a feed item holds: owners with a filled-in profile and
    with an empty one (the database gives every user one), no owner, prices with and without cents, timestamps with and
    without microseconds (and with trailing zeros in them), created and updated events."""
    await db.execute(
        "UPDATE profiles SET full_name = :text, phone_number = '+44 (0)20 7946 0018', bio = :text,"
        " image = 'https://example.com/me.png?size=2' WHERE user_id = :user_id",
        {"text": AWKWARD, "user_id": test_user.id},
    )
    owners = (test_user.id, test_user2.id, test_user3.id, None)
    prices = ("0", "0.01", "12.34", "100", "99999999.99", "7.50")
    micro = (0, 1, 500000, 123456, 10)
    for i in range(24):
        created = T0 + timedelta(hours=i, microseconds=micro[i % len(micro)])
        updated = created + timedelta(minutes=30, microseconds=micro[(i + 1) % len(micro)]) if i % 3 == 0 else None
        await insert_cleaning(
            db,
            name=f"{AWKWARD} {i}",
            price=prices[i % len(prices)],
            owner=owners[i % 4],
            created=created,
            updated=updated,
        )


@pytest.mark.parametrize("page_chunk_size", (1, 7, 50))
async def test_a_feed_page_written_by_postgresql_is_what_pydantic_writes(
    db: Database, awkward_feed: None, page_chunk_size: int
) -> None:
    repo = FeedRepository(db)
    cursor, starting_id, seen = T0 + timedelta(days=2), 0, 0
    while True:
        items = await repo.fetch_cleaning_jobs_feed(
            starting_date=cursor, page_chunk_size=page_chunk_size, starting_id=starting_id
        )
        written = await repo.fetch_cleaning_jobs_feed_json(
            starting_date=cursor, page_chunk_size=page_chunk_size, starting_id=starting_id
        )
        assert written == PAGE.dump_json(items).decode()
        seen += len(items)
        if not items:
            break
        assert items[-1].event_timestamp is not None
        cursor, starting_id = items[-1].event_timestamp, items[-1].id
    assert seen == 24 + 8  # every creation and update, on some page; the last page was "[]"


async def test_the_page_is_written_in_utc_whatever_the_session_time_zone(db: Database, awkward_feed: None) -> None:
    repo = FeedRepository(db)
    cursor = T0 + timedelta(days=2)
    async with db.connection() as connection:
        await connection.execute("SET TIME ZONE 'Asia/Kolkata'")
        try:
            written = await repo.fetch_cleaning_jobs_feed_json(starting_date=cursor)
            items = await repo.fetch_cleaning_jobs_feed(starting_date=cursor)
        finally:
            await connection.execute("RESET TIME ZONE")
    assert written == PAGE.dump_json(items).decode()
    assert '"2026-01-02T' in written
    assert "+05:30" not in written


async def test_the_feed_route_answers_the_json_pydantic_would_write(
    db: Database, awkward_feed: None, authorized_client: AsyncClient
) -> None:
    res = await authorized_client.get("/api/feed/cleanings/", params={"starting_date": "2026-01-04T00:00:00Z"})
    assert res.status_code == 200
    items = await FeedRepository(db).fetch_cleaning_jobs_feed(starting_date=datetime(2026, 1, 4, tzinfo=UTC))
    assert res.content == PAGE.dump_json(items)
    assert len(res.json()) == 20


async def test_a_page_of_offers_written_by_postgresql_is_what_pydantic_writes(
    db: Database, test_user: UserPublic, test_cleaning_with_offers: CleaningInDB
) -> None:
    # One offerer with a filled-in profile; the offers' timestamps with and without microseconds.
    await db.execute(
        "UPDATE profiles SET full_name = :text, bio = :text, image = 'https://example.com/a.png' WHERE user_id = :id",
        {"text": AWKWARD, "id": test_user.id},
    )
    await db.execute(
        "UPDATE user_offers_for_cleanings SET created_at = date_trunc('second', created_at) WHERE user_id = :id",
        {"id": test_user.id},
    )
    repo = OffersRepository(db)
    after: tuple[datetime, int] | None = None
    seen = 0
    for limit in (2, 2, 2, 2):
        offers = await repo.list_offers_for_cleaning(cleaning=test_cleaning_with_offers, limit=limit, after=after)
        written = await repo.list_offers_for_cleaning_json(cleaning=test_cleaning_with_offers, limit=limit, after=after)
        assert written == OFFERS.dump_json(offers).decode()
        seen += len(offers)
        if offers:
            assert offers[-1].created_at is not None
            after = (offers[-1].created_at, offers[-1].user_id)
    everything = await repo.list_offers_for_cleaning(cleaning=test_cleaning_with_offers)
    assert (
        await repo.list_offers_for_cleaning_json(cleaning=test_cleaning_with_offers)
        == OFFERS.dump_json(everything).decode()
    )
    assert seen == len(everything) >= 4


class WithUnion(BaseModel):
    value: int | str


class WithSerializer(BaseModel):
    value: int

    @field_serializer("value")
    def doubled(self, value: int) -> int:
        return value * 2


class WithAlias(BaseModel):
    value: int = Field(serialization_alias="other")


@pytest.mark.parametrize(
    "model, columns, error",
    (
        (WithUnion, {"value": "v"}, TypeError),
        (WithSerializer, {"value": "v"}, TypeError),
        (WithAlias, {"value": "v"}, TypeError),
        (UserPublic, {"id": "v"}, KeyError),
    ),
)
def test_a_model_whose_json_postgresql_would_write_differently_is_refused(
    model: type[BaseModel], columns: dict[str, str], error: type[Exception]
) -> None:
    # Refused when the statement is built (at import), never answered with different JSON.
    with pytest.raises(error):
        model_json(model, columns)
