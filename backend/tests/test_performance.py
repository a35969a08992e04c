"""How the service stays responsive: indexed queries, pooled connections (hashing: test_admission.py).

Speed itself is measured by the benchmark (`python3 backend/manage.py bench`), not here: these
tests check the behaviour that the speed rests on.
"""


import httpx
import pytest
from databases import Database

from app.db.repositories.cleanings import GET_POPULATED_CLEANING_BY_ID_QUERY, LIST_ALL_USER_CLEANINGS_QUERY
from app.db.repositories.profiles import GET_PROFILE_BY_USERNAME_QUERY
from app.db.repositories.users import GET_USER_BY_EMAIL_QUERY, GET_USER_BY_ID_QUERY, GET_USER_BY_USERNAME_QUERY
from app.models.cleaning import CleaningInDB
from app.models.user import UserInDB
from scripts.live_server import live_server
from tests.conftest import TEST_DATABASE_URL


class TestPooledConnections:
    def test_the_service_works_behind_pgbouncer_without_prepared_statement_caching(self) -> None:
        env = {"DB_STATEMENT_CACHE_SIZE": "0", "DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "2"}
        with live_server(TEST_DATABASE_URL, env=env) as base_url:
            body = {"new_user": {"email": "pool@example.com", "username": "pooled", "password": "p4ssword"}}
            token = httpx.post(f"{base_url}/api/users/", json=body).json()["access_token"]["access_token"]
            me = httpx.get(f"{base_url}/api/users/me/", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200 and me.json()["username"] == "pooled"


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
