"""How the service stays responsive: indexed queries, pooled connections (hashing: test_admission.py).

Speed itself is measured by the benchmark (`python3 backend/manage.py bench`), not here: these
tests check the behaviour that the speed rests on.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from databases import Database
from fastapi import FastAPI
from httpx import AsyncClient

from app.db.repositories.cleanings import (
    GET_POPULATED_CLEANING_BY_ID_QUERY,
    GET_TAGGED_CLEANING_BY_ID_QUERY,
    LIST_ALL_USER_CLEANINGS_QUERY,
    LIST_TAGGED_USER_CLEANINGS_QUERY,
)
from app.db.repositories.feed import FETCH_TAGGED_CLEANING_JOBS_FEED_QUERY
from app.db.repositories.offers import EPOCH, LIST_TAGGED_OFFERS_FOR_CLEANING_QUERY
from app.db.repositories.profiles import GET_PROFILE_BY_USERNAME_QUERY
from app.db.repositories.sessions import GET_SESSION_USER_QUERY, TOUCH_SESSION_QUERY
from app.db.repositories.users import GET_USER_BY_EMAIL_QUERY, GET_USER_BY_ID_QUERY, GET_USER_BY_USERNAME_QUERY
from app.models.cleaning import CleaningInDB
from app.models.user import UserInDB, UserPublic
from scripts.live_server import live_server
from tests.conftest import TEST_DATABASE_URL, AnyUser


class TestPooledConnections:
    def test_the_service_works_behind_pgbouncer_without_prepared_statement_caching(self) -> None:
        env = {"DB_STATEMENT_CACHE_SIZE": "0", "DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "2"}
        with live_server(TEST_DATABASE_URL, env=env) as base_url:
            body = {"new_user": {"email": "pool@example.com", "username": "pooled", "password": "p4ssword"}}
            token = httpx.post(f"{base_url}/api/users/", json=body).json()["access_token"]["access_token"]
            me = httpx.get(f"{base_url}/api/users/me/", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200 and me.json()["username"] == "pooled"


# The values of a conditional statement beside its page's: a seed, and no If-None-Match.
TAG_VALUES = {"etag_seed": "seed", "if_none_match": ""}
OFFERS_PAGE = {"cleaning_id": 1, "reader_id": 1, "limit": None, "after_created_at": EPOCH, "after_user_id": 0}


class TestQueriesUseIndexes:
    @pytest.mark.parametrize(
        "query, values, index",
        (
            (GET_USER_BY_EMAIL_QUERY, {"email": "LeBron@James.io"}, "ix_users_email"),  # login by email
            (GET_USER_BY_USERNAME_QUERY, {"username": "lebronjames"}, "ix_users_username"),  # login by username
            (GET_USER_BY_ID_QUERY, {"id": 1}, "users_pkey"),  # every authenticated request ...
            (GET_USER_BY_ID_QUERY, {"id": 1}, "ix_profiles_user_id"),  # ... with the user's profile
            (GET_POPULATED_CLEANING_BY_ID_QUERY, {"id": 1}, "cleanings_pkey"),  # a cleaning and its owner
            (GET_POPULATED_CLEANING_BY_ID_QUERY, {"id": 1}, "users_pkey"),
            (GET_PROFILE_BY_USERNAME_QUERY, {"username": "LebronJames"}, "ix_users_username"),  # a profile
            (LIST_ALL_USER_CLEANINGS_QUERY, {"owner": 1, "after_id": 0, "limit": 20}, "ix_cleanings_owner_id"),
            # The conditional routes' statements (issue 22), the tag and the answer in one.
            (GET_TAGGED_CLEANING_BY_ID_QUERY, {"id": 1, **TAG_VALUES}, "cleanings_pkey"),
            (GET_TAGGED_CLEANING_BY_ID_QUERY, {"id": 1, **TAG_VALUES}, "users_pkey"),
            (
                LIST_TAGGED_USER_CLEANINGS_QUERY,
                {"owner": 1, "after_id": 0, "limit": 20, **TAG_VALUES},
                "ix_cleanings_owner_id",
            ),
            (LIST_TAGGED_OFFERS_FOR_CLEANING_QUERY, {**OFFERS_PAGE, **TAG_VALUES}, "cleanings_pkey"),
            (
                LIST_TAGGED_OFFERS_FOR_CLEANING_QUERY,
                {**OFFERS_PAGE, **TAG_VALUES},
                "ix_user_offers_for_cleanings_cleaning_id",
            ),
        ),
    )
    async def test_the_hot_queries_are_index_lookups(
        self,
        db: Database,
        test_user: UserInDB,
        test_cleaning: CleaningInDB,
        query: str,
        values: dict[str, object],
        index: str,
    ) -> None:
        # With sequential scans priced out, the plan shows which index PostgreSQL can use: on
        # tables this small it would scan them whole either way, and so would prove nothing. The
        # statistics are those of a table where the caller's cleanings are a few among many (as
        # they will be), whatever an earlier test left in them; all of it is rolled back.
        async with db.transaction(force_rollback=True):
            await db.execute("SET LOCAL enable_seqscan = off")
            await db.execute(
                "INSERT INTO cleanings (name, price, owner) SELECT 'other', 1, NULL FROM generate_series(1, 2000)"
            )
            await db.execute("ANALYZE cleanings")
            rows = await db.fetch_all("EXPLAIN " + query.strip().rstrip(";"), values)
        plan = "\n".join(str(row[0]) for row in rows)
        assert index in plan, plan
        assert "Seq Scan" not in plan, plan


def the_routes_own(statements: list[str]) -> list[str]:
    """A request's statements but those that check its caller's session (the caller's user, and
    the mark of a session's use that is written now and then)."""
    return [statement for statement in statements if statement not in (GET_SESSION_USER_QUERY, TOUCH_SESSION_QUERY)]


class TestTheHotRoutesStatements:
    """The conditional read routes (issue 22) answer with as few statements as the answer allows:
    the caller's session, then one statement for the tag and the answer (for the offers, the
    permission check too), whether it writes the answer or a 304; and a 304 writes no JSON."""

    @pytest.fixture
    def routes(self, app: FastAPI, test_cleaning_with_offers: CleaningInDB) -> dict[str, tuple[str, str]]:
        cleaning_id = test_cleaning_with_offers.id
        return {
            "feed": (app.url_path_for("feed:get-cleaning-feed-for-user"), FETCH_TAGGED_CLEANING_JOBS_FEED_QUERY),
            "cleaning": (
                app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=cleaning_id),
                GET_TAGGED_CLEANING_BY_ID_QUERY,
            ),
            "offers": (
                app.url_path_for("offers:list-offers-for-cleaning", cleaning_id=cleaning_id),
                LIST_TAGGED_OFFERS_FOR_CLEANING_QUERY,
            ),
            "mine": (app.url_path_for("cleanings:list-all-user-cleanings"), LIST_TAGGED_USER_CLEANINGS_QUERY),
        }

    @pytest.mark.parametrize("route", ("feed", "cleaning", "offers", "mine"))
    async def test_an_answer_and_a_304_are_each_the_session_and_one_statement(
        self,
        client_for: Callable[[AnyUser], AsyncClient],
        test_user2: UserPublic,
        routes: dict[str, tuple[str, str]],
        count_queries: list[str],
        route: str,
    ) -> None:
        path, statement = routes[route]
        owner = client_for(test_user2)
        count_queries.clear()
        answer = await owner.get(path)
        assert answer.status_code == 200
        assert the_routes_own(count_queries) == [statement]
        count_queries.clear()
        again = await owner.get(path, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304
        assert the_routes_own(count_queries) == [statement]

    async def test_the_offers_refusals_are_one_statement_too(
        self,
        app: FastAPI,
        client_for: Callable[[AnyUser], AsyncClient],
        test_user3: UserPublic,
        routes: dict[str, tuple[str, str]],
        count_queries: list[str],
    ) -> None:
        path, statement = routes["offers"]
        stranger = client_for(test_user3)
        missing = app.url_path_for("offers:list-offers-for-cleaning", cleaning_id=5_000_000)
        for url, expected in ((path, 403), (missing, 404)):
            count_queries.clear()
            assert (await stranger.get(url)).status_code == expected
            assert the_routes_own(count_queries) == [statement]

    # (A cleaning's JSON is a CASE branch of its one row: PostgreSQL evaluates it only when taken.)
    @pytest.mark.parametrize("route", ("feed", "offers", "mine"))
    async def test_a_304_writes_no_json(
        self,
        db: Database,
        test_user2: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
        routes: dict[str, tuple[str, str]],
        route: str,
    ) -> None:
        _, statement = routes[route]
        # The route's statement, answered in full and as a 304 (If-None-Match: *): PostgreSQL's
        # plan shows the page's JSON "never executed" in the latter (the tag's aggregate ran).
        values: dict[str, object] = {
            "feed": {
                "starting_date": datetime.now(UTC) + timedelta(minutes=10),
                "starting_id": 0,
                "page_chunk_size": 20,
            },
            "offers": {**OFFERS_PAGE, "cleaning_id": test_cleaning_with_offers.id, "reader_id": test_user2.id},
            "mine": {"owner": test_user2.id, "after_id": 0, "limit": None},
        }[route]
        values = {**values, "etag_seed": "seed"}
        tag = (await db.fetch_one(statement, {**values, "if_none_match": ""}))["etag"]  # type: ignore[index]
        plans = {}
        for if_none_match in ("", tag):
            rows = await db.fetch_all(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + statement.strip().rstrip(";"),
                {**values, "if_none_match": if_none_match},
            )
            plans[if_none_match] = "\n".join(str(row[0]) for row in rows)
        assert "never executed" not in plans[""], plans[""]
        assert "never executed" in plans[tag], plans[tag]
