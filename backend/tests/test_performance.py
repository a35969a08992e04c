"""How the service stays responsive: hashing off the event loop in a bounded pool, indexed queries.

Speed itself is measured by the benchmark (`python3 backend/manage.py bench`), not here: these
tests check the behaviour that the speed rests on.
"""

import asyncio
import os
import threading

import httpx
import pytest
from databases import Database

from app.db.repositories.cleanings import GET_POPULATED_CLEANING_BY_ID_QUERY, LIST_ALL_USER_CLEANINGS_QUERY
from app.db.repositories.profiles import GET_PROFILE_BY_USERNAME_QUERY
from app.db.repositories.users import GET_USER_BY_EMAIL_QUERY, GET_USER_BY_ID_QUERY, GET_USER_BY_USERNAME_QUERY
from app.models.cleaning import CleaningInDB
from app.models.user import UserInDB
from app.services.hashing import HashingBusyError, HashingPool
from scripts.live_server import live_server
from tests.conftest import TEST_DATABASE_URL


class TestHashingPool:
    async def test_a_full_pool_refuses_at_once_and_accepts_again_when_free(self) -> None:
        pool = HashingPool(size=1, queue_size=1)
        release = threading.Event()
        running = [asyncio.create_task(pool.run(release.wait, timeout=10)) for _ in range(2)]  # 1 runs, 1 waits
        await asyncio.sleep(0.05)
        with pytest.raises(HashingBusyError):
            await pool.run(release.wait, timeout=10)
        release.set()
        assert await asyncio.gather(*running) == [True, True]
        assert await pool.run(lambda: "free again") == "free again"
        assert pool.pending == 0

    @pytest.mark.skipif(not hasattr(os, "getpriority"), reason="thread priorities are a Linux matter")
    async def test_hashing_threads_yield_the_cpu_to_the_event_loop(self) -> None:
        pool = HashingPool(size=1, queue_size=0, niceness=10)

        def own_niceness() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        assert await pool.run(own_niceness) == own_niceness() + 10


class TestSaturatedHashing:
    def test_registrations_past_the_queue_get_503_at_once_and_nothing_else_waits(self) -> None:
        # One slow hashing thread and no queue: of a burst of registrations, one is hashed, the
        # rest are told to come back, and a cheap request is answered while the hash runs.
        env = {"HASH_POOL_SIZE": "1", "HASH_QUEUE_SIZE": "0", "BCRYPT_ROUNDS": "14"}
        with live_server(TEST_DATABASE_URL, env=env) as base_url:

            async def burst() -> tuple[list[httpx.Response], bool]:
                async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:

                    async def register(i: int) -> httpx.Response:
                        body = {
                            "new_user": {"email": f"b{i}@example.com", "username": f"burst{i}", "password": "p4ssword"}
                        }
                        return await http.post("/api/users/", json=body)

                    first = asyncio.create_task(register(0))
                    await asyncio.sleep(0.3)  # the first one is hashing now
                    others = await asyncio.gather(*(register(i) for i in range(1, 5)))
                    health = await http.get("/api/health/ready/")
                    answered_while_hashing = health.status_code == 200 and not first.done()
                    return [await first, *others], answered_while_hashing

            responses, answered_while_hashing = asyncio.run(burst())
            assert responses[0].status_code == 201
            for res in responses[1:]:
                assert res.status_code == 503
                assert res.headers["Retry-After"] == "1"
                assert res.json() == {"detail": "The server is busy checking passwords. Try again in a moment."}
            assert answered_while_hashing, "a cheap request waited for the hash"

            # the refused ones were not half-done: they register fine once the pool is free
            body = {"new_user": {"email": "b1@example.com", "username": "burst1", "password": "p4ssword"}}
            assert httpx.post(f"{base_url}/api/users/", json=body, timeout=60).status_code == 201

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
