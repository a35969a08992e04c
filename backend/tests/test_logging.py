"""Request ids and logs: every answer says its request's id, every line the request causes carries it,
and so does every audit event; JSON lines for a collector; an unhandled error logged once (docs/logging.md)."""

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from databases import Database
from fastapi import FastAPI, status
from httpx import ASGITransport, AsyncClient

from app.api.errors import HASHING_BUSY
from app.api.request_id import INTERNAL_SERVER_ERROR
from app.api.server import get_application
from app.core.config import BACKEND_DIR
from app.core.logging import CONTEXT_FIELDS, RequestContext, end_request, start_request
from app.models.user import AnyUser, UserInDB, UserPublic
from app.services.hashing import HashingBusyError
from scripts.live_server import ServerProcess
from tests.app_with_a_failing_route import FAILING_PATH, FAILURE_MESSAGE, with_a_failing_route
from tests.conftest import TEST_DATABASE_URL, Mailbox, bearer

GENERATED = re.compile(r"[0-9a-f]{32}")
HASHING_BUSY_PATH = "/test-only/hashing-busy/"
JSON_FIELDS = {"time", "level", "logger", "message", *CONTEXT_FIELDS}


def records_of(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if getattr(record, "request_id", None) == request_id]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "phresh.access"]


class TestTheRequestIdHeader:
    @pytest.mark.parametrize(
        "sent",
        ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "req:42/edge@lb1+retry=2", "x" * 128, "!"],
    )
    async def test_a_sane_id_of_the_client_comes_back(self, app: FastAPI, client: AsyncClient, sent: str) -> None:
        res = await client.get(app.url_path_for("health:alive"), headers={"X-Request-ID": sent})
        assert res.headers["X-Request-ID"] == sent

    @pytest.mark.parametrize(
        "sent",
        [b"", b"with space", b'quo"te', b"apo'strophe", b"back\\slash", b"x" * 129, "caf\u00e9".encode(), b"tab\there"],
        ids=["empty", "space", "quote", "apostrophe", "backslash", "too long", "not ascii", "tab"],
    )
    async def test_an_insane_one_is_replaced_by_a_new_one(self, app: FastAPI, client: AsyncClient, sent: bytes) -> None:
        res = await client.get(app.url_path_for("health:alive"), headers={b"X-Request-ID": sent})
        assert GENERATED.fullmatch(res.headers["X-Request-ID"])

    async def test_without_one_each_request_gets_its_own(self, app: FastAPI, client: AsyncClient) -> None:
        ids = {(await client.get(app.url_path_for("health:alive"))).headers["X-Request-ID"] for _ in range(3)}
        assert len(ids) == 3 and all(GENERATED.fullmatch(request_id) for request_id in ids)

    async def test_every_kind_of_answer_carries_it(self, app: FastAPI, client: AsyncClient) -> None:
        sent = {"X-Request-ID": "every-answer"}
        answers = {
            "404 no such path": await client.get("/api/no-such-thing/", headers=sent),
            "401 no token": await client.get(app.url_path_for("users:get-current-user"), headers=sent),
            "405 wrong method": await client.delete(app.url_path_for("health:alive"), headers=sent),
            "422 invalid body": await client.post(app.url_path_for("users:register-new-user"), json={}, headers=sent),
            "413 body too large": await client.post(
                app.url_path_for("users:register-new-user"), content=b"x" * (2 * 1024 * 1024), headers=sent
            ),
            "200 CORS preflight": await client.options(
                app.url_path_for("users:get-current-user"),
                headers={**sent, "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"},
            ),
        }
        statuses = {name: res.status_code for name, res in answers.items()}
        assert statuses == {name: int(name[:3]) for name in answers}
        assert {name: res.headers.get("X-Request-ID") for name, res in answers.items()} == dict.fromkeys(
            answers, "every-answer"
        )


class TestLogLines:
    async def test_every_line_a_request_causes_carries_its_id_and_the_access_line_says_it_all(
        self, app: FastAPI, authorized_client: AsyncClient, test_user: UserPublic, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)  # the database driver's query lines are lines this request causes
        res = await authorized_client.get(
            app.url_path_for("users:get-current-user"), headers={"X-Request-ID": "trace-me"}
        )
        assert res.status_code == status.HTTP_200_OK

        mine = records_of(caplog, "trace-me")
        assert any(record.name.startswith("databases") for record in mine)  # the driver's, too
        [access] = [record for record in access_lines(caplog) if record.request_id == "trace-me"]  # type: ignore[attr-defined]
        fields = {field: getattr(access, field) for field in CONTEXT_FIELDS if field != "duration"}
        assert fields == {
            "request_id": "trace-me",
            "route": "/api/users/me/",  # the route's template, never the raw path
            "method": "GET",
            "status": 200,
            "user_id": test_user.id,  # set by the auth dependency
        }
        assert isinstance(access.duration, float) and access.duration >= 0  # type: ignore[attr-defined]

    async def test_the_route_is_its_template(
        self, app: FastAPI, authorized_client: AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="phresh.access")
        path = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id="4242")
        res = await authorized_client.get(path, headers={"X-Request-ID": "templated"})
        assert res.status_code == status.HTTP_404_NOT_FOUND
        [access] = [record for record in access_lines(caplog) if record.request_id == "templated"]  # type: ignore[attr-defined]
        assert (access.route, access.status) == ("/api/cleanings/{cleaning_id}/", 404)  # type: ignore[attr-defined]
        assert "4242" not in access.getMessage()

    async def test_a_task_the_request_starts_carries_its_id_and_lines_outside_a_request_none(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="phresh.test")
        logger = logging.getLogger("phresh.test")

        async def spawned() -> None:
            logger.info("from a task the request started")

        token = start_request(RequestContext(request_id="parent", method="GET"))
        try:
            await asyncio.create_task(spawned())
        finally:
            end_request(token)
        logger.info("after the request")
        assert [(r.getMessage(), r.request_id) for r in caplog.records if r.name == "phresh.test"] == [  # type: ignore[attr-defined]
            ("from a task the request started", "parent"),
            ("after the request", None),
        ]

    async def test_the_mail_senders_lines_carry_no_request_id(
        self, app: FastAPI, client: AsyncClient, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="databases")
        res = await client.post(
            app.url_path_for("users:register-new-user"),
            json={"new_user": {"email": "sent@example.com", "username": "sent", "password": "a-password"}},
            headers={"X-Request-ID": "asks-for-mail"},
        )
        assert res.status_code == status.HTTP_201_CREATED
        await mailbox.wait_for("sent@example.com")  # sent by the sender, a task started at start-up

        # The sender claims a message with this statement (app/db/repositories/outbox.py: CLAIM_QUERY).
        claims = [record for record in caplog.records if "UPDATE outbox_messages m" in record.getMessage()]
        assert claims, "the sender's claim of the message was logged"
        assert {record.request_id for record in claims} == {None}  # type: ignore[attr-defined]
        assert records_of(caplog, "asks-for-mail")  # while the request's own lines carry its id


class TestAuditEvents:
    async def test_an_event_records_the_id_of_its_request_and_the_trail_finds_it_by_that_id(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[[AnyUser], AsyncClient],
        db: Database,
        test_superuser: UserInDB,
    ) -> None:
        res = await client.post(
            app.url_path_for("users:register-new-user"),
            json={"new_user": {"email": "audited@example.com", "username": "audited", "password": "a-password"}},
            headers={"X-Request-ID": "audit-me"},
        )
        assert res.status_code == status.HTTP_201_CREATED
        row = await db.fetch_one("SELECT kind, request_id FROM security_events WHERE kind = 'registration'")
        assert row is not None and (row["kind"], row["request_id"]) == ("registration", "audit-me")

        admin = client_for(test_superuser)
        path = app.url_path_for("security-events:list-security-events")
        found = (await admin.get(path, params={"request_id": "audit-me"})).json()
        assert [(event["kind"], event["request_id"]) for event in found["events"]] == [("registration", "audit-me")]
        assert (await admin.get(path, params={"request_id": "another"})).json()["total"] == 0


@pytest.fixture(scope="module")
async def failing_app() -> AsyncIterator[FastAPI]:
    """The app with a route that fails, beside the session's app (which stays as it is)."""
    app = with_a_failing_route(get_application(database_url=TEST_DATABASE_URL))

    async def hashing_busy() -> None:
        raise HashingBusyError  # what the hashing line raises when no place comes free in time

    app.add_api_route(HASHING_BUSY_PATH, hashing_busy, methods=["POST"], include_in_schema=False)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        yield app


class TestUnhandledErrors:
    async def test_an_error_with_a_handler_is_answered_by_it_with_the_id(
        self, failing_app: FastAPI, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with AsyncClient(transport=ASGITransport(app=failing_app), base_url="http://testserver") as client:
            res = await client.post(HASHING_BUSY_PATH, headers={"X-Request-ID": "busy"})
        assert (res.status_code, res.json()["detail"], res.headers["X-Request-ID"]) == (503, HASHING_BUSY, "busy")
        assert not [record for record in caplog.records if record.levelno >= logging.ERROR]

    async def test_answers_500_with_the_request_id_and_is_logged_once_with_its_traceback(
        self, failing_app: FastAPI, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        # raise_app_exceptions stays on: an error that went on past the app would fail the test here.
        async with AsyncClient(transport=ASGITransport(app=failing_app), base_url="http://testserver") as client:
            res = await client.post(FAILING_PATH, headers={"X-Request-ID": "quote-me"})

        assert res.status_code == status.HTTP_500_INTERNAL_SERVER_ERROR
        assert res.json() == {"detail": INTERNAL_SERVER_ERROR, "request_id": "quote-me"}
        assert res.headers["X-Request-ID"] == "quote-me"
        errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert len(errors) == 1
        [error] = errors
        assert error.request_id == "quote-me" and error.exc_info is not None  # type: ignore[attr-defined]
        assert FAILURE_MESSAGE in caplog.text and "Traceback" in caplog.text
        [access] = [record for record in access_lines(caplog) if record.request_id == "quote-me"]  # type: ignore[attr-defined]
        assert (access.route, access.status) == (FAILING_PATH, 500)  # type: ignore[attr-defined]


class TestJsonLinesFromALiveServer:
    def test_every_line_is_one_json_object_with_every_field_and_the_error_is_logged_once(self) -> None:
        """uvicorn, one process (as the image runs it), LOG_FORMAT=json: its whole output is read."""
        with tempfile.TemporaryFile() as output:
            server = ServerProcess(
                TEST_DATABASE_URL,
                env={"LOG_FORMAT": "json"},
                output=output,
                module="tests.app_with_a_failing_route:app",
            )
            base_url = server.start()
            try:
                body = {"new_user": {"email": "jsonl@example.com", "username": "jsonl", "password": "a-password"}}
                registered = httpx.post(f"{base_url}/api/users/", json=body, timeout=30)
                assert registered.status_code == status.HTTP_201_CREATED
                token = registered.json()["access_token"]["access_token"]
                me = httpx.get(f"{base_url}/api/users/me/", headers={**bearer(token), "X-Request-ID": "json-me"})
                user_id = me.json()["id"]
                failed = httpx.post(f"{base_url}{FAILING_PATH}", headers={"X-Request-ID": "json-fails"})
                assert failed.json() == {"detail": INTERNAL_SERVER_ERROR, "request_id": "json-fails"}
            finally:
                server.stop()
            output.seek(0)
            text = output.read().decode()

        lines = [json.loads(line) for line in text.splitlines()]  # every line parses
        assert all(set(line) >= JSON_FIELDS for line in lines)
        for line in lines:
            assert datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0)  # RFC 3339, UTC
        assert any(line["logger"] == "uvicorn.error" for line in lines)  # uvicorn's own lines, in JSON too

        [access] = [line for line in lines if line["logger"] == "phresh.access" and line["request_id"] == "json-me"]
        assert {key: access[key] for key in ("level", "route", "method", "status", "user_id")} == {
            "level": "INFO",
            "route": "/api/users/me/",
            "method": "GET",
            "status": 200,
            "user_id": user_id,
        }
        assert isinstance(access["duration"], float)

        errors = [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
        assert len(errors) == 1, errors  # once: not again by uvicorn ("Exception in ASGI application")
        [error] = errors
        assert error["request_id"] == "json-fails" and error["route"] == FAILING_PATH
        assert "Traceback" in error["exception"] and FAILURE_MESSAGE in error["exception"]


def test_an_unknown_log_format_stops_start_up() -> None:
    env = {**os.environ, "LOG_FORMAT": "yaml", "DATABASE_URL": str(TEST_DATABASE_URL)}
    command = [sys.executable, "-c", "import app.core.config"]
    result = subprocess.run(command, cwd=BACKEND_DIR, env=env, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "LOG_FORMAT must be text or json" in result.stderr
