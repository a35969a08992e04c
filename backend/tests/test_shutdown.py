"""SIGTERM: a worker stops taking connections, answers every request it took, lets its mail sender
finish the message it is sending or give it back at once, then closes its pool (docs/deployment.md).

Each test runs a real server (uvicorn, 2 workers) on a database of its own and ends it with SIGTERM
as an orchestrator does. Nothing here depends on speed: the bounds only stop a hang, and the one
that matters (a message sent again sooner than its claim would allow) has a claim of 600 s.
"""

import asyncio
import email
import email.policy
import signal
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from databases import DatabaseURL

from app.db.admin import libpq_url, sibling_database
from scripts.live_server import ServerProcess, prepare_database
from scripts.ports import free_port
from tests.conftest import TEST_DATABASE_URL, eventually

SHUTDOWN_DATABASE_URL = sibling_database(TEST_DATABASE_URL, "shutdown")

# Bounds on a hang, not speeds to meet. The message's claim is far longer than any of them: a
# message that had to wait it out could not arrive within the test.
HANG_SECONDS = 240
MAIL_CLAIM_SECONDS = 600


@pytest.fixture
def database() -> DatabaseURL:
    prepare_database(SHUTDOWN_DATABASE_URL)
    return SHUTDOWN_DATABASE_URL


@pytest.fixture
async def conn(database: DatabaseURL) -> Any:
    connection = await asyncpg.connect(libpq_url(database))
    yield connection
    await connection.close()


def terminate(server: ServerProcess) -> int:
    """SIGTERM, as `docker stop` or Kubernetes sends it, and the exit code once it has stopped."""
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=HANG_SECONDS)


class HoldingMailServer:
    """A real SMTP server (aiosmtpd) that holds every message at DATA until `let_go()`, as a slow
    mail server does; it keeps what it accepted. A client that hangs up meanwhile delivers nothing."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted: list[EmailMessage] = []
        self.holding = threading.Event()
        self._go = threading.Event()
        self._controller: Any = None

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.holding.set()
        while not self._go.is_set():  # noqa: ASYNC110 (set from the test's thread)
            await asyncio.sleep(0.02)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.accepted.append(message)
        return "250 Message accepted for delivery"

    def let_go(self) -> None:
        self._go.set()

    def __enter__(self) -> "HoldingMailServer":
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._go.set()
        self._controller.stop()


@pytest.fixture
def holding_mail_server() -> Iterator[HoldingMailServer]:
    with HoldingMailServer() as server:
        yield server


def mail_env(mail_server: HoldingMailServer, **extra: str) -> dict[str, str]:
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mail_server.port),
        "SMTP_STARTTLS": "false",
        "SMTP_TIMEOUT_SECONDS": "300",  # the held DATA is not a timeout
        "MAIL_CLAIM_SECONDS": str(MAIL_CLAIM_SECONDS),
        "MAIL_POLL_SECONDS": "0.2",
        **extra,
    }


async def register(base_url: str, username: str) -> None:
    new_user = {"email": f"{username}@example.com", "username": username, "password": "drain-pass-123"}
    async with httpx.AsyncClient(base_url=base_url, timeout=HANG_SECONDS) as http:
        res = await http.post("/api/users/", json={"new_user": new_user})
    assert res.status_code == 201


async def message_row(conn: asyncpg.Connection) -> tuple[Any, ...]:
    row = await conn.fetchrow("SELECT outcome, claimed_until, attempts FROM outbox_messages")
    return tuple(row)


async def wait_for(event: threading.Event, what: str) -> None:
    async def is_set() -> bool:
        return event.is_set()

    await eventually(is_set, what, within=HANG_SECONDS)


class TestRequestsInFlight:
    async def test_every_request_the_server_took_is_answered_in_full_and_none_is_half_done(
        self, database: DatabaseURL, conn: asyncpg.Connection, tmp_path: Path
    ) -> None:
        # Registrations hash (slowly here, one at a time per worker), so several are in flight when
        # the signal comes; eight clients keep sending, each on a new connection, until the server is gone.
        env = {
            "HASH_POOL_SIZE": "1",
            "HASH_MAX_WAIT_SECONDS": str(HANG_SECONDS),  # none refused: each is answered 201 or not at all
            "BCRYPT_ROUNDS": "13",
            "REGISTER_MAX_PER_ADDRESS": "100000",
            "SHUTDOWN_GRACE_SECONDS": str(HANG_SECONDS),
            "SMTP_HOST": "",  # verification mails as files
            "MAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
        }
        server = ServerProcess(database, workers=2, env=env)
        base_url = server.start()
        outcomes: dict[str, str] = {}  # username: the status answered, or the transport error met

        async def client(number: int) -> None:
            limits = httpx.Limits(max_keepalive_connections=0)  # a connection per request: none idle to close
            async with httpx.AsyncClient(base_url=base_url, timeout=HANG_SECONDS, limits=limits) as http:
                for attempt in range(10_000):
                    username = f"drain{number}x{attempt}"
                    new_user = {"email": f"{username}@example.com", "username": username, "password": "drain-pass-1"}
                    try:
                        res = await http.post("/api/users/", json={"new_user": new_user})
                    except httpx.TransportError as exc:  # refused at connect, or taken by no worker
                        outcomes[username] = type(exc).__name__
                        return
                    outcomes[username] = str(res.status_code)

        clients = [asyncio.create_task(client(number)) for number in range(8)]
        try:
            # A registration counts itself (a rate-limit hit) once it holds a hashing place: wait
            # until more have begun than have been answered, so some are in flight at the signal.
            async def in_flight() -> bool:
                begun = await conn.fetchval("SELECT count(*) FROM rate_limit_hits")
                return bool(begun >= 4 and begun > len(outcomes))

            await eventually(in_flight, "registrations in flight", within=HANG_SECONDS)
            begun_before_signal = await conn.fetchval("SELECT count(*) FROM rate_limit_hits")
            assert await asyncio.to_thread(terminate, server) == 0
            await asyncio.wait_for(asyncio.gather(*clients), HANG_SECONDS)
        finally:
            server.stop()
            for task in clients:
                task.cancel()

        answered = {username for username, outcome in outcomes.items() if outcome.isdigit()}
        assert {outcomes[username] for username in answered} == {"201"}  # no 500 from a pool closed too soon
        assert len(answered) >= begun_before_signal  # each registration begun before the signal was answered
        # Nothing was done without its answer reaching the client, nor answered without being done.
        stored = {row["username"] for row in await conn.fetch("SELECT username FROM users")}
        assert stored == answered
        # and no verification mail waits out a claim of a worker that is gone
        held = await conn.fetchval(
            "SELECT count(*) FROM outbox_messages WHERE outcome IS NULL AND claimed_until IS NOT NULL"
        )
        assert held == 0


class TestMailSenderOnStop:
    async def test_a_message_being_sent_is_finished_within_the_grace_and_sent_once(
        self, database: DatabaseURL, conn: asyncpg.Connection, holding_mail_server: HoldingMailServer, tmp_path: Path
    ) -> None:
        mail_server = holding_mail_server
        log = tmp_path / "server.log"
        with log.open("wb") as output:
            server = ServerProcess(
                database, workers=2, env=mail_env(mail_server, MAIL_STOP_SECONDS=str(HANG_SECONDS)), output=output
            )
            base_url = server.start()
            try:
                await register(base_url, "heldmail")
                await wait_for(mail_server.holding, "the mail server holding the message")
                assert server.process is not None
                server.process.send_signal(signal.SIGTERM)

                async def sender_waits() -> bool:
                    return b"gets up to" in log.read_bytes()

                await eventually(sender_waits, "the stopping sender waiting for its message", within=HANG_SECONDS)
                mail_server.let_go()
                assert await asyncio.to_thread(server.process.wait, HANG_SECONDS) == 0
            finally:
                server.stop()

        assert await message_row(conn) == ("sent", None, 1)
        assert [str(message["To"]) for message in mail_server.accepted] == ["heldmail@example.com"]

    async def test_a_message_not_sent_within_the_grace_goes_back_at_once_and_the_next_server_sends_it(
        self, database: DatabaseURL, conn: asyncpg.Connection, holding_mail_server: HoldingMailServer
    ) -> None:
        mail_server = holding_mail_server
        env = mail_env(mail_server, MAIL_STOP_SECONDS="0.5")
        server = ServerProcess(database, workers=2, env=env)
        base_url = server.start()
        try:
            await register(base_url, "slowmail")
            await wait_for(mail_server.holding, "the mail server holding the message")
            assert await asyncio.to_thread(terminate, server) == 0
        finally:
            server.stop()

        # Back in the queue, due, its try not counted: not held for the rest of a 600 s claim.
        assert await message_row(conn) == (None, None, 0)
        assert mail_server.accepted == []  # the sender hung up before the server said yes

        mail_server.let_go()
        successor = ServerProcess(database, workers=1, env=env)
        successor.start()
        try:

            async def sent() -> bool:
                return bool((await message_row(conn))[0] == "sent")

            await eventually(
                sent, "the message sent by the next server, long before its old claim ends", within=HANG_SECONDS
            )
        finally:
            successor.stop()
        assert [str(message["To"]) for message in mail_server.accepted] == ["slowmail@example.com"]
