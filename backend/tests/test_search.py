"""Searching for jobs (issue 24): GET /api/cleanings/search/ finds cleanings by their words, filters
them, keeps taken jobs out unless asked, sorts them four ways, and pages them exactly, at the cost
of an indexed read whatever the table's size; bad input is a clear 4xx."""

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient

import app.db.repositories.search as search_module
from app.api.dependencies.search import (
    FOREIGN_CURSOR,
    INVALID_CURSOR,
    RELEVANCE_WITHOUT_QUERY,
    REVERSED_PRICE_RANGE,
    SEARCH_ONLY_EXCLUDES,
    SEARCH_WITHOUT_WORDS,
)
from app.core.config import SEARCH_LANGUAGE
from app.db.repositories.search import SEARCH_QUERIES, SearchRepository
from app.models.cleaning import CleaningInDB
from app.models.search import CleaningSearchPage, SearchCursor, SearchFilters, SearchSort
from app.models.user import UserPublic
from tests.conftest import AnyUser

Clients = Callable[[AnyUser], AsyncClient]

POST_CLEANING = """
    INSERT INTO cleanings (name, description, price, cleaning_type, owner, created_at, updated_at)
    VALUES (:name, :description, :price, :cleaning_type, :owner, :created_at, :created_at)
    RETURNING id
"""
# `count` cleanings in one statement (one timestamp for all), prices and words repeating, so that
# every sort meets ties: prices 10, 20, 30; names alike in threes, so ranks tie too.
POST_TIED_CLEANINGS = """
    INSERT INTO cleanings (name, description, price, cleaning_type, owner)
    SELECT CASE n % 3 WHEN 0 THEN 'oven clean' WHEN 1 THEN 'oven' ELSE 'windows' END,
           CASE n % 2 WHEN 0 THEN 'and the oven too' ELSE 'nothing else' END,
           10 * (1 + n % 3), 'spot_clean', :owner
    FROM generate_series(1, :count) AS n
"""
OVEN = "websearch_to_tsquery(cleaning_search_config(), 'oven')"
MATCHES_OVEN = f"search_vector @@ {OVEN}"
# The order each sort promises, over the whole table, for `oven`: what walking the pages must give.
REFERENCE_ORDER = {
    SearchSort.relevance: f"ts_rank(search_vector, {OVEN}) DESC, id DESC",
    SearchSort.newest: "created_at DESC, id DESC",
    SearchSort.price_asc: "price, id",
    SearchSort.price_desc: "price DESC, id DESC",
}


async def post(
    db: Database,
    owner: AnyUser | None,
    name: str,
    description: str = "",
    *,
    price: float = 10,
    cleaning_type: str = "spot_clean",
    age: timedelta = timedelta(0),
) -> int:
    values = {
        "name": name,
        "description": description,
        "price": price,
        "cleaning_type": cleaning_type,
        "owner": owner.id if owner else None,
        "created_at": datetime.now(UTC) - age,
    }
    return int(await db.fetch_val(POST_CLEANING, values=values))


def search_path(app: FastAPI) -> str:
    return app.url_path_for("cleanings:search-cleanings")


async def search(app: FastAPI, client: AsyncClient, **params: Any) -> dict[str, Any]:
    res = await client.get(search_path(app), params=params)
    assert res.status_code == status.HTTP_200_OK, res.text
    page: dict[str, Any] = res.json()
    return page


async def found(app: FastAPI, client: AsyncClient, **params: Any) -> list[int]:
    return [item["id"] for item in (await search(app, client, **params))["cleanings"]]


async def walk(
    app: FastAPI, client: AsyncClient, *, between_pages: Callable[[], Any] | None = None, **params: Any
) -> list[int]:
    """Every page's ids, each page asked for with the cursor of the one before."""
    ids: list[int] = []
    cursor = params.pop("cursor", None)
    while True:
        page = await search(app, client, **params, **({"cursor": cursor} if cursor else {}))
        ids += [item["id"] for item in page["cleanings"]]
        assert len(page["cleanings"]) <= params.get("limit", 20)
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
        if between_pages is not None:
            await between_pages()


class TestFindingJobs:
    async def test_words_of_the_name_and_description_are_found_stemmed_with_the_owner(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        oven = await post(db, test_user2, "Ovens and hobs", "A greasy kitchen")
        kitchen = await post(db, test_user2, "Flat", "Kitchens, cleaned weekly")
        await post(db, test_user2, "Garden shed", "Cobwebs")
        page = await search(app, authorized_client, q="oven")
        assert [item["id"] for item in page["cleanings"]] == [oven]
        assert page["next_cursor"] is None
        item = CleaningSearchPage.model_validate(page).cleanings[0]
        assert item.name == "Ovens and hobs" and item.owner is not None and item.owner.username == test_user2.username
        assert item.owner.profile is not None and item.owner.profile.user_id == test_user2.id
        assert not {"password", "salt", "search_vector"} & (
            page["cleanings"][0].keys() | page["cleanings"][0]["owner"].keys()
        )
        assert sorted(await found(app, authorized_client, q="kitchen cleaning")) == [kitchen]  # both words, stemmed
        assert await found(app, authorized_client, q="KITCHEN") != []

    async def test_a_match_in_the_name_ranks_above_one_in_the_description(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        in_description = await post(db, test_user2, "Flat", "the windows")
        in_name = await post(db, test_user2, "Windows", "a flat", age=timedelta(days=3))
        both = await post(db, test_user2, "Windows", "all the windows", age=timedelta(days=9))
        assert await found(app, authorized_client, q="window") == [both, in_name, in_description]

    async def test_the_query_reads_as_a_search_engine_does(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        deep = await post(db, test_user2, "Deep clean", "kitchen")
        clean_deep = await post(db, test_user2, "Clean, then deep", "bathroom")
        oven = await post(db, test_user2, "Oven", "kitchen")
        assert await found(app, authorized_client, q='"deep clean"') == [deep]  # a phrase
        assert sorted(await found(app, authorized_client, q="deep clean")) == [deep, clean_deep]
        assert sorted(await found(app, authorized_client, q="oven or bathroom")) == [clean_deep, oven]
        assert await found(app, authorized_client, q="kitchen -oven") == [deep]

    async def test_anonymous_callers_get_401(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.get(search_path(app), params={"q": "oven"})
        assert res.status_code == status.HTTP_401_UNAUTHORIZED

    async def test_search_is_not_taken_for_a_cleaning_id(
        self, app: FastAPI, authorized_client: AsyncClient, test_cleaning: CleaningInDB
    ) -> None:
        assert search_path(app) == "/api/cleanings/search/"
        assert await found(app, authorized_client) == [test_cleaning.id]
        by_id = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=test_cleaning.id)
        assert (await authorized_client.get(by_id)).status_code == status.HTTP_200_OK

    @pytest.mark.parametrize("method", ["PUT", "DELETE", "POST", "PATCH"])
    async def test_a_search_can_only_be_read(self, app: FastAPI, authorized_client: AsyncClient, method: str) -> None:
        res = await authorized_client.request(method, search_path(app), params={"q": "oven"})
        assert res.status_code == status.HTTP_405_METHOD_NOT_ALLOWED
        assert res.headers["Allow"] == "GET"

    async def test_the_language_is_the_setting_the_database_was_migrated_with(self, db: Database) -> None:
        assert await db.fetch_val("SELECT cleaning_search_config()::text") == SEARCH_LANGUAGE


class TestFilters:
    async def test_by_cleaning_type_one_or_several(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        ids = {
            kind: await post(db, test_user2, f"oven {kind}", cleaning_type=kind)
            for kind in ("dust_up", "spot_clean", "full_clean")
        }
        assert await found(app, authorized_client, q="oven", cleaning_type="dust_up") == [ids["dust_up"]]
        both = await found(app, authorized_client, q="oven", cleaning_type=["dust_up", "full_clean"])
        assert sorted(both) == sorted([ids["dust_up"], ids["full_clean"]])
        assert len(await found(app, authorized_client, cleaning_type=["spot_clean"])) == 1  # without words too

    async def test_by_price_range_bounds_included(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        ids = {price: await post(db, test_user2, "oven", price=price) for price in (9.99, 10.0, 20.5, 30.0, 30.01)}
        inside = await found(app, authorized_client, q="oven", min_price=10, max_price="30", sort="price_asc")
        assert inside == [ids[10.0], ids[20.5], ids[30.0]]
        assert await found(app, authorized_client, min_price=30.01) == [ids[30.01]]
        assert await found(app, authorized_client, max_price=9.99) == [ids[9.99]]
        assert await found(app, authorized_client, min_price=20.5, max_price=20.5) == [ids[20.5]]

    async def test_open_jobs_only_unless_asked_for_all(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_cleaning_with_offers: CleaningInDB,
        test_cleaning_with_accepted_offer: CleaningInDB,
        test_user2: UserPublic,
    ) -> None:
        completed = await post(db, test_user2, "cleaning with offers, done")
        await db.execute(
            "INSERT INTO user_offers_for_cleanings (cleaning_id, user_id, status) VALUES (:c, :u, 'completed')",
            values={"c": completed, "u": test_user2.id},
        )
        # Pending offers leave a job open; an accepted or completed one takes it.
        assert await found(app, authorized_client, q="offers") == [test_cleaning_with_offers.id]
        everything = await found(app, authorized_client, q="offers", include="all", sort="newest")
        assert everything == [completed, test_cleaning_with_accepted_offer.id, test_cleaning_with_offers.id]

    async def test_every_filter_at_once(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        wanted = await post(db, test_user2, "oven", price=50, cleaning_type="full_clean")
        await post(db, test_user2, "oven", price=50, cleaning_type="dust_up")
        await post(db, test_user2, "oven", price=500, cleaning_type="full_clean")
        await post(db, test_user2, "sink", price=50, cleaning_type="full_clean")
        params = {"q": "oven", "cleaning_type": "full_clean", "min_price": 10, "max_price": 100, "include": "open"}
        for sort in SearchSort:
            assert await found(app, authorized_client, **params, sort=sort) == [wanted]


class TestSortingAndPaging:
    @pytest.mark.parametrize("sort", list(SearchSort))
    @pytest.mark.parametrize("limit", [1, 4, 7])
    async def test_walking_the_pages_gives_each_match_once_in_the_sorts_order_ties_and_all(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_user2: UserPublic,
        sort: SearchSort,
        limit: int,
    ) -> None:
        await db.execute(POST_TIED_CLEANINGS, values={"owner": test_user2.id, "count": 30})
        await post(db, test_user2, "oven", age=timedelta(hours=1), price=20)  # an older one, tied on price
        await post(db, test_user2, "oven", age=timedelta(hours=-1), price=10)  # a newer one
        expected = [
            row["id"]
            for row in await db.fetch_all(
                f"SELECT id FROM cleanings WHERE {MATCHES_OVEN} ORDER BY {REFERENCE_ORDER[sort]}"  # noqa: S608 - ours
            )
        ]
        assert len(expected) == 20 + 5 + 2  # oven in the name, in the description only, and the two
        assert await walk(app, authorized_client, q="oven", sort=sort, limit=limit) == expected

    @pytest.mark.parametrize("sort", [SearchSort.newest, SearchSort.price_asc, SearchSort.price_desc])
    async def test_without_words_every_open_job_is_listed_in_order(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic, sort: SearchSort
    ) -> None:
        await db.execute(POST_TIED_CLEANINGS, values={"owner": test_user2.id, "count": 25})
        expected = [
            row["id"]
            for row in await db.fetch_all(f"SELECT id FROM cleanings ORDER BY {REFERENCE_ORDER[sort]}")  # noqa: S608
        ]
        assert await walk(app, authorized_client, sort=sort, limit=6) == expected

    async def test_the_default_sort_is_relevance_with_words_and_newest_without(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        in_name = await post(db, test_user2, "oven", age=timedelta(days=2))
        in_description = await post(db, test_user2, "kitchen", "oven")
        assert await found(app, authorized_client, q="oven") == [in_name, in_description]
        assert await found(app, authorized_client) == [in_description, in_name]

    @pytest.mark.parametrize("sort", list(SearchSort))
    async def test_pages_stay_exact_while_jobs_are_posted_and_taken(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic, sort: SearchSort
    ) -> None:
        await db.execute(POST_TIED_CLEANINGS, values={"owner": test_user2.id, "count": 45})
        before = {row["id"] for row in await db.fetch_all(f"SELECT id FROM cleanings WHERE {MATCHES_OVEN}")}  # noqa: S608
        posted: list[int] = []

        async def post_more() -> None:
            for price in (5, 20, 45):  # cheaper, tied and dearer than what is there
                posted.append(await post(db, test_user2, "oven clean", "the oven", price=price))

        ids = await walk(app, authorized_client, q="oven", sort=sort, limit=4, between_pages=post_more)
        assert len(ids) == len(set(ids))  # nothing twice
        assert before <= set(ids)  # nothing that was there is skipped
        assert set(ids) <= before | set(posted)

    async def test_a_cursor_is_opaque_and_carries_its_sort_key(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        await db.execute(POST_TIED_CLEANINGS, values={"owner": test_user2.id, "count": 6})
        page = await search(app, authorized_client, sort="price_asc", limit=2)
        cursor = SearchCursor.decode(page["next_cursor"])
        assert (cursor.sort, cursor.price, cursor.id) == (SearchSort.price_asc, "10.00", page["cleanings"][-1]["id"])


class TestRelevanceWindow:
    """Sorted by relevance, the newest SEARCH_RELEVANCE_WINDOW matches are ranked (here 6)."""

    @pytest.fixture(autouse=True)
    def small_window(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(search_module, "SEARCH_RELEVANCE_WINDOW", 6)

    async def test_the_newest_matches_are_ranked_and_paged(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        ids = [
            await post(db, test_user2, "oven" if i % 2 else "kitchen", "oven", age=timedelta(hours=i))
            for i in range(10)
        ]
        newest_six = ids[:6]
        ranked = [i for i in newest_six if ids.index(i) % 2] + [i for i in newest_six if not ids.index(i) % 2]
        expected = sorted(ranked[:3], reverse=True) + sorted(ranked[3:], reverse=True)
        assert await walk(app, authorized_client, q="oven", limit=4) == expected
        # Older matches are reached by date.
        assert await walk(app, authorized_client, q="oven", sort="newest", limit=4) == ids

    async def test_later_pages_rank_the_first_pages_window_and_nothing_posted_since(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        ids = [await post(db, test_user2, "oven", "kitchen", age=timedelta(hours=i)) for i in range(10)]
        ranked = sorted(ids[:6], reverse=True)  # the window: the newest six, their ranks tied
        first = await search(app, authorized_client, q="oven", limit=2)
        assert [item["id"] for item in first["cleanings"]] == ranked[:2]
        weaker = await post(db, test_user2, "kitchen", "oven")  # would rank below every one of them
        await post(db, test_user2, "oven", "oven")  # would rank above
        await db.execute("DELETE FROM cleanings WHERE id = :id", values={"id": ranked[3]})
        rest = await walk(app, authorized_client, q="oven", limit=2, cursor=first["next_cursor"])
        assert rest == [ranked[2], *ranked[4:]]  # the window, but the job deleted meanwhile
        assert weaker in await found(app, authorized_client, q="oven", limit=50)  # a new search's window

    async def test_a_forged_window_costs_no_more_than_a_first_page(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        ids = [await post(db, test_user2, "oven", age=timedelta(hours=i)) for i in range(10)]
        search_digest = SearchFilters(q="oven").fingerprint(SearchSort.relevance)
        long_ago = datetime(2000, 1, 1, tzinfo=UTC)
        cursor = SearchCursor(  # a window that would span every job, if it were taken at its word
            sort=SearchSort.relevance,
            search=search_digest,
            id=2**31 - 1,
            rank=1.0,
            top_created_at=datetime.now(UTC),
            top_id=2**31 - 1,
            window_created_at=long_ago,
            window_id=1,
        )
        rest = await walk(app, authorized_client, q="oven", limit=4, cursor=cursor.encode())
        assert sorted(rest) == sorted(ids[:6])  # still only the newest SEARCH_RELEVANCE_WINDOW matches


def forged(**fields: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


class TestBadInput:
    @pytest.mark.parametrize(
        "params, code, detail",
        (
            ({"q": ""}, 422, None),
            ({"q": "   "}, 422, None),
            ({"q": "oven\x00"}, 422, None),
            ({"q": "oven\nwindows"}, 422, None),
            ({"q": "x" * 201}, 422, None),
            ({"q": "the and of"}, 400, SEARCH_WITHOUT_WORDS),
            ({"q": "!!! ..."}, 400, SEARCH_WITHOUT_WORDS),
            ({"q": "-oven"}, 400, SEARCH_ONLY_EXCLUDES),
            ({"q": "-oven -windows"}, 400, SEARCH_ONLY_EXCLUDES),
            ({"q": "sink or -oven"}, 400, SEARCH_ONLY_EXCLUDES),
            ({"min_price": 20, "max_price": 10}, 400, REVERSED_PRICE_RANGE),
            ({"min_price": -1}, 422, None),
            ({"max_price": "nan"}, 422, None),
            ({"max_price": "1e300"}, 422, None),
            ({"sort": "cheapest"}, 422, None),
            ({"sort": "relevance"}, 400, RELEVANCE_WITHOUT_QUERY),
            ({"cleaning_type": "mop_up"}, 422, None),
            ({"include": "taken"}, 422, None),
            ({"limit": 0}, 422, None),
            ({"limit": 51}, 422, None),
            ({"cursor": "not a cursor!"}, 422, None),
            ({"cursor": "x" * 513}, 422, None),
            ({"cursor": "bm90LWpzb24"}, 400, INVALID_CURSOR),  # base64 of text that is not JSON
            ({"cursor": forged(v=1, sort="newest", search="0" * 16)}, 400, INVALID_CURSOR),  # no key
            (
                {"cursor": forged(v=1, sort="newest", search="0" * 16, id=1, created_at="2026-01-01T00:00:00")},
                400,
                INVALID_CURSOR,
            ),
            (
                {"cursor": forged(v=1, sort="newest", search="0" * 16, id=-5, created_at="2026-01-01T00:00:00Z")},
                400,
                INVALID_CURSOR,
            ),
            ({"cursor": forged(v=1, sort="price_asc", search="0" * 16, id=1, price="1e9")}, 400, INVALID_CURSOR),
            ({"cursor": forged(v=1, sort="relevance", search="0" * 16, id=1, rank=0.5)}, 400, INVALID_CURSOR),
            (
                {"cursor": forged(v=1, sort="relevance", search="0" * 16, id=1, rank=0.5, top_id=3, window_id=3)},
                400,
                INVALID_CURSOR,
            ),
            (
                {"cursor": forged(v=1, sort="newest", search="0" * 16, id=1, created_at="2026-01-01T00:00:00Z", x=1)},
                400,
                INVALID_CURSOR,
            ),
            (
                {"cursor": forged(v=1, sort="newest", search="0" * 16, id=1, created_at="2026-01-01T00:00:00Z")},
                400,
                FOREIGN_CURSOR,
            ),
        ),
    )
    async def test_is_a_clear_4xx(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        test_cleaning: CleaningInDB,
        params: dict[str, Any],
        code: int,
        detail: str | None,
    ) -> None:
        res = await authorized_client.get(search_path(app), params=params)
        assert res.status_code == code, res.text
        if detail is not None:
            assert res.json() == {"detail": detail}

    @pytest.mark.parametrize(
        "other",
        (
            {"sort": "price_desc"},
            {"q": "windows"},
            {"cleaning_type": "dust_up"},
            {"min_price": 1},
            {"max_price": 1000},
            {"include": "all"},
        ),
    )
    async def test_a_cursor_from_another_search_or_sort_is_refused(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic, other: dict[str, Any]
    ) -> None:
        await db.execute(POST_TIED_CLEANINGS, values={"owner": test_user2.id, "count": 6})
        params: dict[str, Any] = {"q": "oven", "sort": "price_asc", "limit": 1}
        cursor = (await search(app, authorized_client, **params))["next_cursor"]
        assert (await authorized_client.get(search_path(app), params={**params, "cursor": cursor})).status_code == 200
        res = await authorized_client.get(search_path(app), params={**params, **other, "cursor": cursor})
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": FOREIGN_CURSOR}

    async def test_the_same_search_with_another_page_size_keeps_its_cursor(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        await db.execute(POST_TIED_CLEANINGS, values={"owner": test_user2.id, "count": 6})
        page = await search(app, authorized_client, q="oven", limit=1)
        assert len(await found(app, authorized_client, q="oven", limit=3, cursor=page["next_cursor"])) == 3


# (sort, words, a cursor past the first page): the plans the benchmark times.
PLANS = [
    (sort, q, deep)
    for sort in SearchSort
    for q in ("kitchen", "oven", "rare", None)
    for deep in (False, True)
    if not (sort is SearchSort.relevance and q is None)
]
SORT_INDEXES = {
    SearchSort.relevance: {"ix_cleanings_search_vector", "ix_cleanings_created_at_id"},
    SearchSort.newest: {"ix_cleanings_created_at_id"},
    SearchSort.price_asc: {"ix_cleanings_price_id"},
    SearchSort.price_desc: {"ix_cleanings_price_id"},
}


class TestSearchesReadThroughIndexes:
    @pytest.mark.parametrize("sort, q, deep", PLANS)
    async def test_each_sort_uses_an_index_and_never_scans_the_cleanings(
        self, db: Database, sort: SearchSort, q: str | None, deep: bool
    ) -> None:
        filters = SearchFilters(q=q)
        cursor = None
        if deep:
            key = {
                SearchSort.relevance: {
                    "rank": 0.05,
                    "top_created_at": datetime.now(UTC) - timedelta(hours=1),
                    "top_id": 100,
                    "window_created_at": datetime.now(UTC) - timedelta(days=1),
                    "window_id": 10,
                },
                SearchSort.newest: {"created_at": datetime.now(UTC) - timedelta(days=1)},
                SearchSort.price_asc: {"price": "25.00"},
                SearchSort.price_desc: {"price": "25.00"},
            }[sort]
            cursor = SearchCursor.model_validate({"sort": sort, "search": filters.fingerprint(sort), "id": 4000, **key})
        values = SearchRepository._values(filters=filters, sort=sort, limit=20, cursor=cursor)
        # As in test_performance: sequential scans priced out, on a table whose statistics are those
        # of many cleanings (words common, less common and rare), all of it rolled back.
        async with db.transaction(force_rollback=True):
            await db.execute("SET LOCAL enable_seqscan = off")
            await db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            await db.execute(
                "INSERT INTO cleanings (name, description, price, created_at)"
                " SELECT 'job ' || n, 'kitchen' || CASE WHEN n % 20 = 0 THEN ' oven' ELSE '' END"
                "  || CASE WHEN n = 777 THEN ' rare' ELSE '' END, n % 50, now() - make_interval(secs => n)"
                " FROM generate_series(1, 5000) AS n"
            )
            await db.execute("ANALYZE cleanings")
            rows = await db.fetch_all("EXPLAIN " + SEARCH_QUERIES[sort].strip().rstrip(";"), values)
        plan = "\n".join(str(row[0]) for row in rows)
        indexes = SORT_INDEXES[sort] | ({"ix_cleanings_search_vector"} if q else set())
        assert any(index in plan for index in indexes), plan
        assert "Seq Scan on cleanings" not in plan, plan
