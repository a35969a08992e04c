"""GET /metrics: exact counts over the workers of a live server, and who may read them."""

import asyncio
import contextlib
import email as email_parser
import email.policy as email_policy
import glob
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from uuid import uuid4

import asyncpg
import httpx
import psutil
import pytest
from asgi_lifespan import LifespanManager
from databases import DatabaseURL
from fastapi import status
from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.datastructures import Secret

from app.core import config
from app.core.metrics import SUPERVISED_DIR_PREFIX
from scripts.live_server import ServerProcess, prepare_database
from tests.conftest import TEST_DATABASE_URL, eventually
from tests.test_mail import token_of

TOKEN = secrets.token_hex(16)
REGISTRATIONS = 3
WRONG_LOGINS = 5  # past LOGIN_MAX_FAILURES_PER_ACCOUNT (3): three 401s, then two 429s
ME_CALLS = 7
BURST = 8  # registrations at once at a hashing line of one place a worker
WORKERS = 2
# Its own database: the outbox holds only what this module's requests put there.
METRICS_DATABASE_URL = TEST_DATABASE_URL.replace(database=f"{TEST_DATABASE_URL.database}_metrics")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 where the exposition has no such sample (a count that never happened)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, route: str, method: str, status_class: str) -> float:
    return value(samples, "phresh_http_requests_total", route=route, method=method, status_class=status_class)


@contextlib.contextmanager
def metrics_server(database_url: DatabaseURL, env: dict[str, str]) -> Iterator[ServerProcess]:
    """A live server of WORKERS workers, its metrics behind TOKEN, mail written to files."""
    env = {"METRICS_TOKEN": TOKEN, "SMTP_HOST": "", "REGISTER_MAX_PER_ADDRESS": "1000", **env}
    server = ServerProcess(database_url, workers=WORKERS, env=env)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if server.process is not None:  # its metrics directory, which the next server started would remove
            for directory in glob.glob(
                os.path.join(tempfile.gettempdir(), f"{SUPERVISED_DIR_PREFIX}{server.process.pid}-*")
            ):
                shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    prepare_database(METRICS_DATABASE_URL)
    env = {
        "MAIL_OUTBOX_DIR": str(tmp_path_factory.mktemp("outbox")),  # the sender's outcomes without a mail server
        "LOGIN_MAX_FAILURES_PER_ACCOUNT": "3",
        "LOGIN_MAX_FAILURES_PER_ADDRESS": "1000",
        "REFRESH_REUSE_GRACE_SECONDS": "0",
    }
    with metrics_server(METRICS_DATABASE_URL, env) as server:
        yield server


@pytest.fixture(scope="module")
def server(server_process: ServerProcess) -> str:
    return server_process.base_url


def workers_of(server: ServerProcess) -> list[psutil.Process]:
    assert server.process is not None
    workers = []
    for child in psutil.Process(server.process.pid).children():
        with contextlib.suppress(psutil.Error):  # gone, or a zombie: no worker
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                workers.append(child)
    return workers


@pytest.fixture(scope="module")
async def http(server: str) -> AsyncIterator[AsyncClient]:
    # A new connection per request: the kernel hands them to either worker.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with AsyncClient(base_url=server, limits=limits, timeout=60) as client:
        yield client


async def scrape(http: AsyncClient) -> Samples:
    res = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert res.status_code == status.HTTP_200_OK
    assert res.headers["content-type"].startswith("text/plain; version=")
    return parse(res.text)


@pytest.fixture(scope="module")
async def after_known_requests(http: AsyncClient) -> Samples:
    """Registrations, wrong passwords, /me, a refresh, a reused refresh token, a logout, a 404,
    refused scrapes; then a scrape once the sender has sent every verification mail."""
    run = uuid4().hex[:8]
    tokens = []
    for n in range(REGISTRATIONS):
        new_user = {"email": f"m{run}{n}@example.com", "username": f"m{run}{n}", "password": "metrics-pass"}
        res = await http.post("/api/users/", json={"new_user": new_user})
        assert res.status_code == status.HTTP_201_CREATED, res.text
        tokens.append(res.json()["access_token"])
    answers = []
    for _ in range(WRONG_LOGINS):
        form = {"username": f"m{run}0@example.com", "password": "not-the-password"}
        answers.append((await http.post("/api/users/login/token/", data=form)).status_code)
    assert answers == [401, 401, 401, 429, 429]
    me = {"Authorization": f"Bearer {tokens[0]['access_token']}"}
    for _ in range(ME_CALLS):
        assert (await http.get("/api/users/me/", headers=me)).status_code == status.HTTP_200_OK
    first = tokens[1]["refresh_token"]
    res = await http.post("/api/users/login/token/refresh/", json={"refresh_token": first})
    assert res.status_code == status.HTTP_200_OK
    res = await http.post("/api/users/login/token/refresh/", json={"refresh_token": first})
    assert res.status_code == status.HTTP_401_UNAUTHORIZED  # reused: its session ends
    logout = {"Authorization": f"Bearer {tokens[2]['access_token']}"}
    assert (await http.post("/api/users/logout/", headers=logout)).status_code == status.HTTP_204_NO_CONTENT
    assert (await http.get("/api/no/such/page/")).status_code == status.HTTP_404_NOT_FOUND
    assert (await http.get("/api/cleanings/12345/")).status_code == status.HTTP_401_UNAUTHORIZED
    assert (await http.get("/metrics")).status_code == status.HTTP_401_UNAUTHORIZED

    async def all_mail_sent() -> bool:
        return value(await scrape(http), "phresh_outbox_messages_total", outcome="sent") >= REGISTRATIONS

    await eventually(all_mail_sent, "the sender sends every verification mail")
    return await scrape(http)


class TestCounts:
    async def test_requests_are_counted_by_route_template_method_and_status_class(
        self, after_known_requests: Samples
    ) -> None:
        samples = after_known_requests
        assert requests(samples, "/api/users/", "POST", "2xx") == REGISTRATIONS
        assert requests(samples, "/api/users/login/token/", "POST", "4xx") == WRONG_LOGINS
        assert requests(samples, "/api/users/login/token/", "POST", "2xx") == 0
        assert requests(samples, "/api/users/me/", "GET", "2xx") == ME_CALLS
        assert requests(samples, "/api/users/login/token/refresh/", "POST", "2xx") == 1
        assert requests(samples, "/api/users/login/token/refresh/", "POST", "4xx") == 1
        assert requests(samples, "/api/users/logout/", "POST", "2xx") == 1
        assert requests(samples, "unmatched", "GET", "4xx") == 1
        assert requests(samples, "/api/cleanings/{cleaning_id}/", "GET", "4xx") == 1
        duration_count = value(
            samples, "phresh_http_request_duration_seconds_count", route="/api/users/me/", method="GET"
        )
        assert duration_count == ME_CALLS

    async def test_no_label_holds_a_raw_path(self, after_known_requests: Samples) -> None:
        routes = {dict(labels).get("route") for _, labels in after_known_requests} - {None}
        assert "/api/cleanings/12345/" not in routes
        assert "/api/no/such/page/" not in routes
        assert all(route == "unmatched" or route.startswith("/") for route in routes)

    async def test_rate_limit_refusals_hashing_and_sessions(self, after_known_requests: Samples) -> None:
        samples = after_known_requests
        assert value(samples, "phresh_rate_limit_refusals_total", kind="login:account") == WRONG_LOGINS - 3
        # Every registration and login took a place in the hashing line; none was refused.
        assert value(samples, "phresh_hashing_wait_seconds_count") == REGISTRATIONS + WRONG_LOGINS
        assert value(samples, "phresh_hashing_refused_total") == 0
        assert value(samples, "phresh_sessions_started_total") == REGISTRATIONS
        assert value(samples, "phresh_sessions_refreshed_total") == 1
        assert value(samples, "phresh_refresh_token_reuse_detected_total") == 1
        assert value(samples, "phresh_sessions_ended_total", reason="refresh_token_reused") == 1
        assert value(samples, "phresh_sessions_ended_total", reason="logout") == 1

    async def test_the_outbox_outcomes_and_what_is_due(self, after_known_requests: Samples) -> None:
        samples = after_known_requests
        assert value(samples, "phresh_outbox_messages_total", outcome="sent") == REGISTRATIONS
        for outcome in ("retried", "failed", "skipped", "expired"):
            assert value(samples, "phresh_outbox_messages_total", outcome=outcome) == 0
        assert value(samples, "phresh_outbox_due_messages") == 0
        assert value(samples, "phresh_outbox_oldest_due_age_seconds") == 0

    async def test_every_scrape_shows_the_whole_replica_whichever_worker_answers(
        self, http: AsyncClient, after_known_requests: Samples
    ) -> None:
        def answered(samples: Samples) -> Samples:
            return {
                key: count
                for key, count in samples.items()
                if key[0] == "phresh_http_requests_total"
                and dict(key[1])["route"] not in ("/metrics", "/api/health/ready/")
            }

        expected = answered(after_known_requests)
        for _ in range(3 * WORKERS):
            assert answered(await scrape(http)) == expected

        # Each worker keeps DB_POOL_MIN_SIZE (2) connections open: the sum shows both workers'.
        async def both_pools_counted() -> bool:
            return value(await scrape(http), "phresh_db_pool_connections") >= 2 * WORKERS

        await eventually(both_pools_counted, "the pool gauges of both workers")

    async def test_build_info_names_the_version_and_the_schema(self, after_known_requests: Samples) -> None:
        from app.api.routes.health import MIGRATIONS_HEAD
        from app.core.config import VERSION

        (build,) = [labels for name, labels in after_known_requests if name == "phresh_build_info"]
        labels = dict(build)
        assert labels["version"] == VERSION
        assert labels["schema_revision"] == MIGRATIONS_HEAD
        assert labels["revision"]


class TestAccess:
    @pytest.mark.parametrize(
        "authorization",
        [None, "", "Bearer", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN],
    )
    async def test_a_missing_or_wrong_token_gets_401_and_no_metrics(
        self, http: AsyncClient, authorization: str | None
    ) -> None:
        headers = {} if authorization is None else {"Authorization": authorization}
        res = await http.get("/metrics", headers=headers)
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.headers["www-authenticate"] == "Bearer"
        assert "phresh_" not in res.text

    async def test_without_a_token_configured_there_is_no_metrics_page(self, client: AsyncClient) -> None:
        res = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert res.status_code == status.HTTP_404_NOT_FOUND
        assert "phresh_" not in res.text

    async def test_metrics_are_not_in_the_openapi_document(self, http: AsyncClient) -> None:
        paths = (await http.get("/openapi.json")).json()["paths"]
        assert "/metrics" not in paths


SESSIONS_MAX = 3
# Another database and server: sessions ended inside larger statements, each reason counted.
SESSIONS_DATABASE_URL = TEST_DATABASE_URL.replace(database=f"{TEST_DATABASE_URL.database}_metrics_sessions")
PASSWORD = "metrics-pass"


@pytest.fixture(scope="module")
def outbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sessions-outbox")


@pytest.fixture(scope="module")
def sessions_server(outbox_dir: Path) -> Iterator[str]:
    prepare_database(SESSIONS_DATABASE_URL)
    env = {"MAIL_OUTBOX_DIR": str(outbox_dir), "SESSIONS_MAX_PER_USER": str(SESSIONS_MAX)}
    with metrics_server(SESSIONS_DATABASE_URL, env) as server:
        yield server.base_url


@pytest.fixture
async def sessions_http(sessions_server: str) -> AsyncIterator[AsyncClient]:
    limits = httpx.Limits(max_keepalive_connections=0)  # either worker answers each request
    async with AsyncClient(base_url=sessions_server, limits=limits, timeout=60) as client:
        yield client


def ended(samples: Samples) -> dict[str, float]:
    """phresh_sessions_ended_total by reason."""
    return {
        dict(labels)["reason"]: count
        for (name, labels), count in samples.items()
        if name == "phresh_sessions_ended_total"
    }


def ended_since(before: Samples, after: Samples) -> dict[str, float]:
    """The sessions ended between two scrapes, by reason (the reasons that ended none left out)."""
    was = ended(before)
    return {reason: count - was.get(reason, 0) for reason, count in ended(after).items() if count != was.get(reason, 0)}


async def user_with_sessions(http: AsyncClient, sessions: int) -> tuple[int, str, list[str]]:
    """A new user (id, email) and the access tokens of `sessions` sessions: a registration, then logins."""
    name = f"s{uuid4().hex[:12]}"
    email = f"{name}@example.com"
    res = await http.post("/api/users/", json={"new_user": {"email": email, "username": name, "password": PASSWORD}})
    assert res.status_code == status.HTTP_201_CREATED, res.text
    user_id, tokens = res.json()["id"], [res.json()["access_token"]["access_token"]]
    for _ in range(sessions - 1):
        res = await http.post("/api/users/login/token/", data={"username": email, "password": PASSWORD})
        assert res.status_code == status.HTTP_200_OK, res.text
        tokens.append(res.json()["access_token"])
    return user_id, email, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestSessionsEndedByReason:
    """Sessions ended by a password change, a deactivation, the per-user limit or a password reset
    (each inside a larger statement) are counted by reason, exactly, across the workers."""

    async def test_a_password_change_ends_the_other_sessions(self, sessions_http: AsyncClient) -> None:
        _, _, tokens = await user_with_sessions(sessions_http, SESSIONS_MAX)
        before = await scrape(sessions_http)
        change = {"password_change": {"current_password": PASSWORD, "new_password": "another-metrics-pass"}}
        res = await sessions_http.put("/api/users/me/password/", json=change, headers=bearer(tokens[0]))
        assert res.status_code == status.HTTP_200_OK, res.text
        assert ended_since(before, await scrape(sessions_http)) == {"password_change": SESSIONS_MAX - 1}

    async def test_a_deactivation_ends_every_session_of_the_user(self, sessions_http: AsyncClient) -> None:
        admin_id, _, (admin_token,) = await user_with_sessions(sessions_http, 1)
        connection = await asyncpg.connect(str(SESSIONS_DATABASE_URL))
        try:
            await connection.execute("UPDATE users SET is_superuser = true WHERE id = $1", admin_id)
        finally:
            await connection.close()
        user_id, _, _ = await user_with_sessions(sessions_http, SESSIONS_MAX)
        before = await scrape(sessions_http)
        res = await sessions_http.post(f"/api/users/{user_id}/deactivate/", headers=bearer(admin_token))
        assert res.status_code == status.HTTP_200_OK, res.text
        middle = await scrape(sessions_http)
        assert ended_since(before, middle) == {"deactivation": SESSIONS_MAX}
        # Deactivating again ends nothing more: the sessions had ended.
        res = await sessions_http.post(f"/api/users/{user_id}/deactivate/", headers=bearer(admin_token))
        assert res.status_code == status.HTTP_200_OK, res.text
        assert ended_since(middle, await scrape(sessions_http)) == {}

    async def test_sessions_past_the_limit_end_the_least_recently_used(self, sessions_http: AsyncClient) -> None:
        before = await scrape(sessions_http)
        await user_with_sessions(sessions_http, SESSIONS_MAX + 2)  # the last two starts each end one
        after = await scrape(sessions_http)
        assert ended_since(before, after) == {"session_limit": 2}
        started = value(after, "phresh_sessions_started_total") - value(before, "phresh_sessions_started_total")
        assert started == SESSIONS_MAX + 2

    async def test_a_password_reset_ends_every_session(self, sessions_http: AsyncClient, outbox_dir: Path) -> None:
        _, email, _ = await user_with_sessions(sessions_http, 2)
        res = await sessions_http.post("/api/users/password-reset/", json={"email": email})
        assert res.status_code == status.HTTP_202_ACCEPTED, res.text

        def reset_mail() -> EmailMessage | None:
            for path in outbox_dir.glob("*.eml"):
                message = email_parser.message_from_bytes(path.read_bytes(), policy=email_policy.default)
                assert isinstance(message, EmailMessage)
                if message["To"] == email and "/reset-password?" in message.get_content():
                    return message
            return None

        async def mail_written() -> bool:
            return reset_mail() is not None

        await eventually(mail_written, "the reset mail written to the outbox folder")
        message = reset_mail()
        assert message is not None
        before = await scrape(sessions_http)
        reset = {"token": token_of(message, "/reset-password"), "new_password": "a-reset-metrics-pass"}
        res = await sessions_http.post("/api/users/password-reset/confirm/", json=reset)
        assert res.status_code == status.HTTP_200_OK, res.text
        assert ended_since(before, await scrape(sessions_http)) == {"password_reset": 2}


class TestHashingRefusals:
    async def test_every_503_of_a_full_hashing_line_is_counted_once(
        self, sessions_server: str, outbox_dir: Path
    ) -> None:
        # One slow hashing thread a worker and a short target wait: of a burst of registrations,
        # most are refused. Whatever the split, the counter says how many 503s the clients got.
        env = {
            "MAIL_OUTBOX_DIR": str(outbox_dir),  # the database's other server writes there too
            "HASH_POOL_SIZE": "1",
            "HASH_MAX_WAIT_SECONDS": "0.05",
            "BCRYPT_ROUNDS": "14",
        }
        with metrics_server(SESSIONS_DATABASE_URL, env) as server:
            limits = httpx.Limits(max_keepalive_connections=0)
            async with AsyncClient(base_url=server.base_url, limits=limits, timeout=120) as http:
                before = await scrape(http)

                async def register(n: int) -> int:
                    name = f"h{uuid4().hex[:12]}"
                    user = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
                    return (await http.post("/api/users/", json={"new_user": user})).status_code

                answers = await asyncio.gather(*(register(n) for n in range(BURST)))
                after = await scrape(http)

        assert set(answers) <= {status.HTTP_201_CREATED, status.HTTP_503_SERVICE_UNAVAILABLE}
        refused = answers.count(status.HTTP_503_SERVICE_UNAVAILABLE)
        assert refused >= 1  # one hash a worker at a time, and a hash takes far longer than the wait
        more = value(after, "phresh_hashing_refused_total") - value(before, "phresh_hashing_refused_total")
        assert more == refused
        waits = value(after, "phresh_hashing_wait_seconds_count") - value(before, "phresh_hashing_wait_seconds_count")
        assert waits == BURST  # served or refused, each waited in line once


class TestOneProcess:
    """One process (the Docker image's uvicorn, one worker): its own memory holds the counts."""

    async def test_the_counts_of_a_single_process_server_are_exact(
        self, apply_migrations: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from app.api.server import get_application

        monkeypatch.setattr(config, "METRICS_TOKEN", Secret(TOKEN))
        app = get_application(database_url=TEST_DATABASE_URL)
        async with (
            LifespanManager(app, startup_timeout=60, shutdown_timeout=60),
            AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as client,
        ):
            before = await scrape(client)  # the counters live as long as this test process: count from here
            for _ in range(3):
                assert (await client.get("/api/users/me/")).status_code == status.HTTP_401_UNAUTHORIZED
            assert (await client.get("/nothing/here")).status_code == status.HTTP_404_NOT_FOUND
            after = await scrape(client)

        def more(route: str, status_class: str) -> float:
            return requests(after, route, "GET", status_class) - requests(before, route, "GET", status_class)

        assert more("/api/users/me/", "4xx") == 3
        assert more("unmatched", "4xx") == 1
        assert more("/metrics", "2xx") == 1  # the first scrape; the second was answering
        assert value(after, "phresh_http_requests_in_flight") == 1  # the scrape itself
        assert value(after, "phresh_db_pool_connections") >= config.DB_POOL_MIN_SIZE
        assert value(after, "phresh_outbox_due_messages") >= 0
        assert [name for name, _ in after if name == "phresh_build_info"] == ["phresh_build_info"]


class TestAWorkerKilled:
    """Last: it kills a worker of the module's server (uvicorn starts another in its place)."""

    async def test_its_counts_stay_and_its_live_gauges_leave_the_sums(
        self, server_process: ServerProcess, http: AsyncClient, after_known_requests: Samples
    ) -> None:
        assert server_process.process is not None
        supervisor = server_process.process.pid
        (directory,) = glob.glob(os.path.join(tempfile.gettempdir(), f"{SUPERVISED_DIR_PREFIX}{supervisor}-*"))
        victim = workers_of(server_process)[0].pid

        async def victim_gauges_written() -> bool:
            return bool(glob.glob(os.path.join(directory, f"gauge_livesum_{victim}.db")))

        await eventually(victim_gauges_written, "the worker's live gauges in the shared directory")
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            pids = [worker.pid for worker in workers_of(server_process)]
            return len(pids) == WORKERS and victim not in pids

        await eventually(replaced, "uvicorn starts a worker in the killed one's place")
        samples = await scrape(http)
        assert not glob.glob(os.path.join(directory, f"gauge_livesum_{victim}.db"))
        assert requests(samples, "/api/users/", "POST", "2xx") == REGISTRATIONS
        assert requests(samples, "/api/users/me/", "GET", "2xx") == ME_CALLS
