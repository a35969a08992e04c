"""What every authenticated request pays for, made cheaper without changing what it does
(docs/performance.md, "The hot routes against the real ceiling")."""

import json
import os
import subprocess
import sys
from uuid import UUID, uuid4

import pytest
from databases import Database
from fastapi import FastAPI

from app.api.request_id import request_id_from
from app.api.server import native_telemetry
from app.core.config import BACKEND_DIR
from app.db import lone_queries
from app.db.repositories.sessions import GET_SESSION_USER_QUERY
from app.models.user import UserInDB

ROW_QUERY = "SELECT CAST(:n AS int) AS n, CAST(:word AS text) AS word, CAST(NULL AS text) AS nothing"


class TestRowsStraightFromAsyncpg:
    async def test_a_row_reads_as_fetch_one_reads_it(self, db: Database) -> None:
        values = {"n": 7, "word": "seven"}
        row = await lone_queries.fetch_row(db, ROW_QUERY, values)
        record = await db.fetch_one(ROW_QUERY, values)
        assert row is not None and record is not None
        assert dict(row.items()) == dict(record._mapping) == {"n": 7, "word": "seven", "nothing": None}
        assert row.get("nothing", "absent") is None and row.get("missing") is None

    async def test_no_row_is_none(self, db: Database) -> None:
        assert await lone_queries.fetch_row(db, "SELECT 1 AS one WHERE CAST(:no AS bool)", {"no": False}) is None

    async def test_inside_a_transaction_it_reads_the_transactions_own_writes(
        self, db: Database, test_user: UserInDB
    ) -> None:
        async with db.transaction(force_rollback=True):
            await db.execute("UPDATE users SET username = 'renamed_here' WHERE id = :id", {"id": test_user.id})
            row = await lone_queries.fetch_row(
                db, GET_SESSION_USER_QUERY, {"user_id": test_user.id, "session_id": uuid4()}
            )
            assert row is not None and row["username"] == "renamed_here"
            assert row["session_stale"] is None  # no such session
        row = await lone_queries.fetch_row(db, GET_SESSION_USER_QUERY, {"user_id": test_user.id, "session_id": uuid4()})
        assert row is not None and row["username"] == test_user.username

    async def test_the_statement_goes_to_the_query_log_with_its_arguments_hidden(
        self, db: Database, test_user: UserInDB, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level("DEBUG", logger="databases")
        await lone_queries.fetch_row(db, GET_SESSION_USER_QUERY, {"user_id": test_user.id, "session_id": uuid4()})
        [line] = [r.getMessage() for r in caplog.records if r.name == "databases" and "FROM users" in r.getMessage()]
        assert "$1" in line and line.endswith("Args: (hidden)")


TELEMETRY_PROBE = """
import json, sys
from opentelemetry import trace

started = []

class Tracer(trace.NoOpTracer):
    def start_span(self, name, *args, **kwargs):
        started.append(name)
        return super().start_span(name, *args, **kwargs)

class Provider(trace.TracerProvider):
    def get_tracer(self, *args, **kwargs):
        return Tracer()

if sys.argv[1] == "configured":
    trace.set_tracer_provider(Provider())

import asyncio
from httpx import ASGITransport, AsyncClient
from app.api.server import get_application, native_telemetry

async def main():
    app = get_application()
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://localhost") as client:
        status = (await client.get("/api/health/")).status_code
    print(json.dumps({"status": status, "spans": started, "config": native_telemetry()}))

asyncio.run(main())
"""


class TestFastAPIsOwnTelemetry:
    def probe(self, mode: str) -> dict[str, object]:
        env = {**os.environ, "PHRESH_ENV_FILE": os.devnull, "SECRET_KEY": "k" * 64, "FASTAPI_OTEL_AUTO_CONFIGURE": ""}
        env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/unused"  # never connected: no lifespan
        done = subprocess.run(
            [sys.executable, "-c", TELEMETRY_PROBE, mode], cwd=BACKEND_DIR, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer

    def test_an_operator_who_set_a_tracer_provider_gets_fastapis_spans(self) -> None:
        answer = self.probe("configured")
        assert answer["status"] == 200 and answer["config"] is None
        assert answer["spans"], "no span was started for the request"

    def test_without_one_no_request_asks_opentelemetry_again(self) -> None:
        answer = self.probe("unconfigured")
        assert answer["status"] == 200 and answer["spans"] == []
        assert answer["config"] == {"tracing": False, "metrics": False, "logs": False}

    def test_the_suites_app_has_it_off(self, app: FastAPI) -> None:
        assert native_telemetry() == {"tracing": False, "metrics": False, "logs": False}


class TestRequestIds:
    def test_a_new_request_id_is_a_random_uuid4_in_32_hex_digits(self) -> None:
        ids = {request_id_from([]) for _ in range(1000)}
        assert len(ids) == 1000
        for request_id in ids:
            assert UUID(hex=request_id).version == 4 and UUID(hex=request_id).hex == request_id
