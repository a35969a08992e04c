"""The activity feed (Part 21): every event once, in order, at any depth, at the cost of one
indexed query per page; and the other lists that grow, paged the same way."""

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient

from app.db.repositories.feed import FETCH_CLEANING_JOBS_FEED_JSON_QUERY, FETCH_CLEANING_JOBS_FEED_QUERY
from app.models.cleaning import CleaningInDB
from app.models.feed import CleaningFeedItem
from app.models.user import UserPublic
from tests.conftest import AnyUser, create_cleaning_with_offers, create_user

Clients = Callable[[AnyUser], AsyncClient]

# Cleanings that share their timestamps, as rows written in one transaction do: `count` new ones,
# and every third of them updated in one later statement.
INSERT_TIED_CLEANINGS = """
    INSERT INTO cleanings (name, price, cleaning_type, owner)
    SELECT 'tied ' || n, 10, 'spot_clean', :owner FROM generate_series(1, :count) AS n
"""
UPDATE_EVERY_THIRD = "UPDATE cleanings SET price = price + 1 WHERE id % 3 = 0"
# `count` cleanings a second apart back from :start, every fourth updated an hour after its creation.
INSERT_SPREAD_CLEANINGS = """
    INSERT INTO cleanings (name, price, cleaning_type, owner, created_at, updated_at)
    SELECT 'spread ' || n, 10, 'spot_clean', :owner,
           CAST(:start AS timestamptz) - make_interval(secs => n),
           CAST(:start AS timestamptz) - make_interval(secs => n)
               + CASE WHEN n % 4 = 0 THEN interval '1 hour' ELSE interval '0' END
    FROM generate_series(1, :count) AS n
"""


async def feed(app: FastAPI, client: AsyncClient, **params: object) -> list[dict[str, object]]:
    res = await client.get(app.url_path_for("feed:get-cleaning-feed-for-user"), params=params)
    assert res.status_code == status.HTTP_200_OK, res.text
    items: list[dict[str, object]] = res.json()
    return items


async def walk(app: FastAPI, client: AsyncClient, *, page: int, exact: bool = True) -> list[tuple[object, object]]:
    """Every event, page by page, each page starting after the last item of the one before."""
    events: list[tuple[object, object]] = []
    params: dict[str, object] = {"page_chunk_size": page}
    while items := await feed(app, client, **params):
        events += [(item["id"], item["event_type"]) for item in items]
        params["starting_date"] = items[-1]["event_timestamp"]
        if exact:
            params["starting_id"] = items[-1]["id"]
    return events


class TestTheFeed:
    async def test_a_page_is_the_newest_events_with_their_cleanings_and_owners(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        test_list_of_new_and_updated_cleanings: list[CleaningInDB],
    ) -> None:
        items = await feed(app, authorized_client)
        assert len(items) == 20  # the default page
        updated = [c for i, c in enumerate(test_list_of_new_and_updated_cleanings) if i % 4 == 0]
        newest_created = test_list_of_new_and_updated_cleanings[:-8:-1]
        assert [(item["id"], item["event_type"]) for item in items] == [
            *[(c.id, "is_update") for c in reversed(updated)],
            *[(c.id, "is_create") for c in newest_created],
        ]
        assert [item["row_number"] for item in items] == list(range(1, 21))
        first = CleaningFeedItem(**items[0])
        assert first.event_timestamp == first.updated_at and first.description.startswith("Updated")  # type: ignore[union-attr]
        owner = items[0]["owner"]
        assert isinstance(owner, dict) and owner["profile"]["user_id"] == owner["id"]
        assert not {"password", "salt"} & owner.keys()

    async def test_walking_the_pages_gives_every_event_once(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        test_list_of_new_and_updated_cleanings: list[CleaningInDB],
    ) -> None:
        events = await walk(app, authorized_client, page=7)
        assert len(events) == len(set(events)) == 50 + 13

    async def test_hundreds_of_cleanings_sharing_one_timestamp_page_without_a_gap(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user: UserPublic
    ) -> None:
        await db.execute(INSERT_TIED_CLEANINGS, values={"owner": test_user.id, "count": 300})
        await db.execute(UPDATE_EVERY_THIRD)
        assert await db.fetch_val("SELECT count(DISTINCT created_at) FROM cleanings") == 1
        events = await walk(app, authorized_client, page=25)
        assert len(events) == len(set(events)) == 300 + 100
        # The tutorial's cursor (the last timestamp alone) skips the rest of a tie: hence starting_id.
        assert len(await walk(app, authorized_client, page=25, exact=False)) == 25 + 25

    async def test_the_default_cursor_is_ten_minutes_after_each_request(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user: UserPublic
    ) -> None:
        # (the tutorial computed it once, when the module was imported)
        for minutes, listed in ((9, True), (11, False)):
            await db.execute("DELETE FROM cleanings")
            start = datetime.now(UTC) + timedelta(minutes=minutes, seconds=1)
            await db.execute(INSERT_SPREAD_CLEANINGS, values={"owner": test_user.id, "start": start, "count": 1})
            assert bool(await feed(app, authorized_client)) is listed

    @pytest.mark.parametrize(
        "offset, listed",
        ((timedelta(seconds=1), True), (timedelta(0), False), (timedelta(seconds=-1), False)),
    )
    async def test_a_starting_date_without_a_time_zone_is_utc(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_user: UserPublic,
        offset: timedelta,
        listed: bool,
    ) -> None:
        created = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        start = created + timedelta(seconds=1)  # the one cleaning is a second before :start
        await db.execute(INSERT_SPREAD_CLEANINGS, values={"owner": test_user.id, "start": start, "count": 1})
        naive = (created + offset).replace(tzinfo=None)
        assert bool(await feed(app, authorized_client, starting_date=str(naive))) is listed  # as httpx sends it
        aware = (created + offset).astimezone(timezone_east)
        assert bool(await feed(app, authorized_client, starting_date=aware.isoformat())) is listed

    async def test_a_page_is_one_query_whatever_its_size(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        test_list_of_new_and_updated_cleanings: list[CleaningInDB],
        count_queries: list[str],
    ) -> None:
        await feed(app, authorized_client, page_chunk_size=2)
        queries_for_two = len(count_queries)
        count_queries.clear()
        assert len(await feed(app, authorized_client, page_chunk_size=50)) == 50
        assert len(count_queries) == queries_for_two == 2  # the caller, and the page

    @pytest.mark.parametrize(
        "params",
        (
            {"page_chunk_size": 0},
            {"page_chunk_size": 51},
            {"starting_date": "yesterday"},
            {"starting_date": "0.5"},  # pydantic alone reads numbers as seconds since 1970
            {"starting_date": "1700000000"},
            {"starting_date": "2026-11-29"},
            {"starting_id": -1},
            {"starting_id": 2**31},
        ),
    )
    async def test_bad_parameters_are_422(
        self, app: FastAPI, authorized_client: AsyncClient, params: dict[str, object]
    ) -> None:
        res = await authorized_client.get(app.url_path_for("feed:get-cleaning-feed-for-user"), params=params)
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT

    @pytest.mark.parametrize("moment", ("0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"))
    async def test_the_ends_of_time_are_cursors_too(
        self, app: FastAPI, authorized_client: AsyncClient, test_cleaning: CleaningInDB, moment: str
    ) -> None:
        assert len(await feed(app, authorized_client, starting_date=moment)) == (0 if moment.startswith("0001") else 1)

    async def test_anonymous_callers_get_401(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.get(app.url_path_for("feed:get-cleaning-feed-for-user"))
        assert res.status_code == status.HTTP_401_UNAUTHORIZED


timezone_east = timezone(timedelta(hours=5, minutes=30))


class TestAPageCostsTheSameWhateverTheTableSize:
    async def test_a_page_is_read_through_the_indexes_not_by_sorting_the_table(
        self, db: Database, test_user: UserPublic
    ) -> None:
        now = datetime.now(UTC)
        await db.execute(INSERT_SPREAD_CLEANINGS, values={"owner": test_user.id, "start": now, "count": 20_000})
        await db.execute("ANALYZE cleanings")
        values = {"starting_date": now, "starting_id": 0, "page_chunk_size": 20}
        try:
            # The route's query (the page written as JSON by PostgreSQL) and the tutorial's (its rows).
            queries = (FETCH_CLEANING_JOBS_FEED_JSON_QUERY, FETCH_CLEANING_JOBS_FEED_QUERY)
            cursors = (values, {**values, "starting_date": now - timedelta(seconds=18_000)})  # first; 90 % down
            for query, cursor in itertools.product(queries, cursors):
                rows = await db.fetch_all("EXPLAIN " + query.strip().rstrip(";"), cursor)
                plan = "\n".join(str(row[0]) for row in rows)
                assert "ix_cleanings_created_at_id" in plan and "ix_cleanings_updated_at_id" in plan, plan
                # The cleanings are read through the indexes; the page's owners may be read any way
                # (the users table holds one row here, and once analyzed it is scanned, rightly).
                assert "Seq Scan on cleanings" not in plan, plan
        finally:
            # Statistics of 20,000 cleanings of one owner would steer the plans of later tests.
            await db.execute("DELETE FROM cleanings")
            await db.execute("ANALYZE cleanings")


class TestListsThatGrowArePaged:
    async def test_my_cleanings_a_page_at_a_time(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user: UserPublic
    ) -> None:
        await db.execute(INSERT_TIED_CLEANINGS, values={"owner": test_user.id, "count": 25})
        path = app.url_path_for("cleanings:list-all-user-cleanings")
        assert len((await authorized_client.get(path)).json()) == 25  # the tutorial's call: all of them
        seen: list[int] = []
        params = {"limit": 10}
        while page := (await authorized_client.get(path, params=params)).json():
            assert len(page) <= 10
            seen += [cleaning["id"] for cleaning in page]
            params["after_id"] = page[-1]["id"]
        assert seen == list(range(1, 26))

    async def test_a_cleanings_offers_a_page_at_a_time(
        self, app: FastAPI, client_for: Clients, db: Database, test_user2: UserPublic
    ) -> None:
        cleaners = [
            await create_user(db, email=f"c{i}@example.com", username=f"cleaner{i}", password="clean-it")
            for i in range(9)
        ]
        cleaning = await create_cleaning_with_offers(db, test_user2, cleaners)
        # offers made in one transaction share a timestamp: the user id breaks the tie
        await db.execute("UPDATE user_offers_for_cleanings SET created_at = '2026-01-01T00:00:00Z'")
        owner = client_for(test_user2)
        path = app.url_path_for("offers:list-offers-for-cleaning", cleaning_id=cleaning.id)
        assert len((await owner.get(path)).json()) == 9
        seen: list[int] = []
        params: dict[str, object] = {"limit": 4}
        while page := (await owner.get(path, params=params)).json():
            seen += [offer["user_id"] for offer in page]
            params |= {"after_created_at": page[-1]["created_at"], "after_user_id": page[-1]["user_id"]}
        assert seen == sorted(user.id for user in cleaners)
