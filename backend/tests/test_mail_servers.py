"""Mail servers as they behave in the field, against the real sender and the real outbox: servers
that greylist, refuse for a while at any step of the conversation, drop the connection in the
middle of DATA, refuse for good, or refuse our settings. Each is an aiosmtpd server on 127.0.0.1
that keeps every message it accepts; every message must arrive exactly once, or not at all when
the server refused it for good or it waited past its end of life.

The app's own sender is paused in these tests; each runs a sender of its own (`MailSender` with an
`SmtpTransport` built with the settings under test) on the app's database.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from databases import Database
from fastapi import FastAPI
from httpx import AsyncClient
from starlette.datastructures import Secret

from app.core.config import EMAIL_VERIFICATION_MAIL_MAX_AGE_MINUTES, PASSWORD_RESET_MAIL_MAX_AGE_MINUTES
from app.services.mail import MailSender, SmtpTransport
from scripts.ports import free_port
from tests.conftest import Mailbox, eventually

PASSWORD = "heatcavslakers"
SMTP_USER, SMTP_PASSWORD = "phresh", "the-right-password"
MAIL_LOGGER = "app.services.mail"

# AUTH without TLS is what these servers on 127.0.0.1 do; aiosmtpd warns of it, rightly elsewhere.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


class FieldServer(SMTP):
    """aiosmtpd's server, numbering its connections (`number`, from 1) in its mailbox."""

    event_handler: "FieldMailbox"
    number = 0

    async def _handle_client(self) -> None:
        self.number = self.event_handler.connected()
        if self.event_handler.refuse_greeting and self.refusing:
            await self.push("421 4.3.2 Too many connections, try again later")
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    @property
    def refusing(self) -> bool:
        """Troubled servers refuse on every other connection: the 1st, the 3rd, ..."""
        return self.number % 2 == 1


class FieldMailbox(Mailbox):
    """A Mailbox (every message it accepts is kept) on a port of its own, served by `FieldServer`
    or a subclass, optionally asking for AUTH (user `phresh`, the right password)."""

    server_class: type[FieldServer] = FieldServer
    refuse_greeting = False

    def __init__(self, *, auth_required: bool = False) -> None:
        super().__init__(free_port())
        self.auth_required = auth_required
        self.connections = 0
        self.auth_attempts = 0

    def connected(self) -> int:
        with self._lock:
            self.connections += 1
            return self.connections

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        with self._lock:
            self.auth_attempts += 1
        right = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        return AuthResult(success=right, handled=False)  # not handled: aiosmtpd answers 535

    def start(self) -> None:
        box = self
        options: dict[str, Any] = (
            {"authenticator": self.authenticate, "auth_required": True, "auth_require_tls": False}
            if self.auth_required
            else {}
        )

        class FieldController(Controller):
            def factory(self) -> SMTP:
                return box.server_class(self.handler, **self.SMTP_kwargs)

        self._controller = FieldController(self, hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()
        with self._lock:  # the controller's own connection, made to see the server up, is not ours
            self.connections = 0

    @contextlib.contextmanager
    def running(self) -> Iterator["FieldMailbox"]:
        """The server, serving inside the block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def accepted(self) -> list[str]:
        """The recipient of every message accepted, in order."""
        with self._lock:
            return [str(message["To"]) for message in self.messages]


@contextlib.asynccontextmanager
async def sender_for(db: Database, box: Mailbox, **settings: Any) -> AsyncIterator[MailSender]:
    """A sender of the outbox to `box` with these SMTP settings (inside `app_sender_paused`, it is the only one)."""
    options: dict[str, Any] = {"hostname": "127.0.0.1", "port": box.port, "start_tls": "false", "username": ""}
    sender = MailSender(db, SmtpTransport(**(options | settings)))
    sender.start()
    try:
        yield sender
    finally:
        await sender.stop()


@contextlib.asynccontextmanager
async def app_sender_paused(started_app: FastAPI) -> AsyncIterator[None]:
    async with started_app.state.mail_sender.paused():
        yield


async def register(app: FastAPI, client: AsyncClient, *emails: str) -> None:
    for email in emails:
        body = {"new_user": {"email": email, "username": email.split("@")[0], "password": PASSWORD}}
        assert (await client.post(app.url_path_for("users:register-new-user"), json=body)).status_code == 201


async def rows(db: Database) -> list[dict[str, Any]]:
    found = await db.fetch_all(
        "SELECT id, kind, recipient, outcome, attempts, last_error FROM outbox_messages ORDER BY id"
    )
    return [dict(row._mapping) for row in found]


async def all_settled(db: Database) -> bool:
    return all(row["outcome"] is not None for row in await rows(db))


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == MAIL_LOGGER and r.levelno >= logging.ERROR]


RECIPIENTS = [f"field{n}@example.com" for n in range(3)]


class GreylistingMailbox(FieldMailbox):
    """Greylisting as postgrey does it: the first RCPT TO of each (client, sender, recipient)
    triplet is answered 450; the same triplet is accepted when it comes back."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str, str]] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        triplet = (session.peer[0], envelope.mail_from, address)
        with self._lock:
            first = triplet not in self.seen
            self.seen.add(triplet)
        if first:
            return "450 4.2.0 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class TestGreylisting:
    async def test_every_message_arrives_once_on_the_retry(
        self, app: FastAPI, started_app: FastAPI, client: AsyncClient, db: Database, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger=MAIL_LOGGER)
        box = GreylistingMailbox()
        with box.running():
            async with app_sender_paused(started_app), sender_for(db, box):
                await register(app, client, *RECIPIENTS)
                await eventually(lambda: all_settled(db), "every message settled")
        assert sorted(box.accepted()) == sorted(RECIPIENTS)  # each exactly once
        settled = await rows(db)
        assert [(row["outcome"], row["attempts"]) for row in settled] == [("sent", 2)] * 3  # refused, then accepted
        refusals = [r.getMessage() for r in caplog.records if "RCPT TO: 450 4.2.0 Greylisted" in r.getMessage()]
        assert len(refusals) == 3


class TemporaryAtMailFrom(FieldMailbox):
    reply = "451 4.3.0 Temporary local problem, try again later"

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if server.refusing:
            return self.reply
        envelope.mail_from, envelope.mail_options = address, list(options)
        return "250 OK"


class ClosingAtMailFrom(TemporaryAtMailFrom):
    """421: the server answers, then closes the connection (RFC 5321 3.8)."""

    reply = "421 4.7.0 Try again later, closing connection"

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if server.refusing:
            asyncio.get_running_loop().call_soon(server.transport.close)  # after the reply is written
        return await super().handle_MAIL(server, session, envelope, address, options)


class RefusingGreeting(FieldMailbox):
    refuse_greeting = True


class RefusingEhloServer(FieldServer):
    async def smtp_EHLO(self, hostname: str) -> None:
        if not self.refusing:
            await super().smtp_EHLO(hostname)
            return
        await self.push("421 4.7.0 Too busy, closing connection")
        assert self.transport is not None
        self.transport.close()


class RefusingEhlo(FieldMailbox):
    server_class = RefusingEhloServer


class RefusingStarttlsServer(FieldServer):
    """Offers STARTTLS on refusing connections, then answers 454 to it (RFC 3207: TLS not
    available for a temporary reason); on the others, offers no TLS at all."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("454 4.7.0 TLS not available due to temporary reason")


class RefusingStarttls(FieldMailbox):
    server_class = RefusingStarttlsServer

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if server.refusing:
            return [*responses[:-1], "250-STARTTLS", responses[-1]]
        return responses


class RefusingAuth(FieldMailbox):
    def __init__(self) -> None:
        super().__init__(auth_required=True)

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if server.refusing:
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")
        return super().authenticate(server, session, envelope, mechanism, auth_data)


class TemporaryAtRcpt(FieldMailbox):
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if server.refusing:
            return "451 4.7.1 Service unavailable, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class RefusingDataServer(FieldServer):
    async def smtp_DATA(self, arg: str) -> None:
        if self.refusing and self.envelope is not None and self.envelope.rcpt_tos:
            await self.push("451 4.3.1 Insufficient system storage, try again later")
            return
        await super().smtp_DATA(arg)


class RefusingData(FieldMailbox):
    server_class = RefusingDataServer


class TemporaryAtEndOfData(FieldMailbox):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if server.refusing:
            return "451 4.3.0 Queue file write error, try again later"
        return await super().handle_DATA(server, session, envelope)


class DroppingDataServer(FieldServer):
    """Reads the first lines of the message, then closes the connection: the message is not accepted."""

    async def smtp_DATA(self, arg: str) -> None:
        if not (self.refusing and self.envelope is not None and self.envelope.rcpt_tos):
            await super().smtp_DATA(arg)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        for _ in range(2):
            await self._reader.readuntil(b"\r\n")
        assert self.transport is not None
        self.transport.close()


class DroppingData(FieldMailbox):
    server_class = DroppingDataServer


class TestTemporaryTroubleAtEveryStep:
    @pytest.mark.parametrize(
        ("server_class", "settings"),
        [
            pytest.param(RefusingGreeting, {}, id="421 at the greeting"),
            pytest.param(RefusingEhlo, {}, id="421 to EHLO"),
            pytest.param(RefusingStarttls, {"start_tls": "auto"}, id="454 to STARTTLS"),
            pytest.param(RefusingAuth, {"username": SMTP_USER, "password": Secret(SMTP_PASSWORD)}, id="454 to AUTH"),
            pytest.param(TemporaryAtMailFrom, {}, id="451 to MAIL FROM"),
            pytest.param(ClosingAtMailFrom, {}, id="421 to MAIL FROM, then closed"),
            pytest.param(TemporaryAtRcpt, {}, id="451 to RCPT TO"),
            pytest.param(RefusingData, {}, id="451 to DATA"),
            pytest.param(TemporaryAtEndOfData, {}, id="451 at the end of data"),
            pytest.param(DroppingData, {}, id="connection dropped in the middle of DATA"),
        ],
    )
    async def test_every_message_is_sent_again_until_it_arrives_once(
        self,
        app: FastAPI,
        started_app: FastAPI,
        client: AsyncClient,
        db: Database,
        server_class: type[FieldMailbox],
        settings: dict[str, Any],
    ) -> None:
        box = server_class()
        with box.running():
            async with app_sender_paused(started_app), sender_for(db, box, **settings):
                await register(app, client, *RECIPIENTS)
                await eventually(lambda: all_settled(db), "every message settled")
        assert sorted(box.accepted()) == sorted(RECIPIENTS)  # each exactly once
        settled = await rows(db)
        assert [row["outcome"] for row in settled] == ["sent"] * 3
        # Every try was one connection, and every other connection was refused: some were retried.
        assert sum(row["attempts"] for row in settled) == box.connections > len(RECIPIENTS)


class RefusingRcptForGood(FieldMailbox):
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "550 5.1.1 No such mailbox here"


class RefusingEndOfDataForGood(FieldMailbox):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "554 5.7.1 Message rejected as spam"


class RefusingMailFromAsTooLarge(FieldMailbox):
    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "552 5.3.4 Message size exceeds fixed limit"


class TestPermanentRefusals:
    @pytest.mark.parametrize(
        ("server_class", "reply"),
        [
            pytest.param(RefusingRcptForGood, "RCPT TO: 550 5.1.1 No such mailbox here", id="550 to RCPT TO"),
            pytest.param(
                RefusingEndOfDataForGood, "DATA: 554 5.7.1 Message rejected as spam", id="554 at the end of data"
            ),
            # Refused at MAIL FROM, but for its size: the message's fault, not our settings'.
            pytest.param(
                RefusingMailFromAsTooLarge,
                "MAIL FROM: 552 5.3.4 Message size exceeds fixed limit",
                id="552 to MAIL FROM",
            ),
        ],
    )
    async def test_a_5xx_about_the_message_is_tried_once_and_recorded_failed(
        self,
        app: FastAPI,
        started_app: FastAPI,
        client: AsyncClient,
        db: Database,
        server_class: type[FieldMailbox],
        reply: str,
    ) -> None:
        box = server_class()
        with box.running():
            async with app_sender_paused(started_app), sender_for(db, box):
                await register(app, client, *RECIPIENTS)
                await eventually(lambda: all_settled(db), "every message settled")
        assert box.accepted() == []
        settled = await rows(db)
        assert [(row["outcome"], row["attempts"], row["last_error"]) for row in settled] == [("failed", 1, reply)] * 3
        assert box.connections == 3


class TestOurSettingsRefused:
    @pytest.mark.parametrize(
        ("auth_required", "wrong", "right", "said"),
        [
            pytest.param(
                True,
                {"username": SMTP_USER, "password": Secret("a-wrong-password")},
                {"username": SMTP_USER, "password": Secret(SMTP_PASSWORD)},
                "AUTH: 535 5.7.8 Authentication credentials invalid (check SMTP_USERNAME and SMTP_PASSWORD)",
                id="535: a wrong password",
            ),
            pytest.param(
                True,
                {},
                {"username": SMTP_USER, "password": Secret(SMTP_PASSWORD)},
                "MAIL FROM: 530 5.7.0 Authentication required (check SMTP_USERNAME and SMTP_PASSWORD)",
                id="530: no credentials where the server requires AUTH",
            ),
            pytest.param(
                False,
                {"start_tls": "true"},
                {"start_tls": "auto"},
                "STARTTLS: SMTP_STARTTLS=true, and the server does not offer STARTTLS",
                id="STARTTLS required, and the server does not offer it",
            ),
        ],
    )
    async def test_every_message_waits_one_error_a_round_and_all_arrive_once_the_settings_are_fixed(
        self,
        app: FastAPI,
        started_app: FastAPI,
        client: AsyncClient,
        db: Database,
        caplog: pytest.LogCaptureFixture,
        auth_required: bool,
        wrong: dict[str, Any],
        right: dict[str, Any],
        said: str,
    ) -> None:
        caplog.set_level(logging.INFO, logger=MAIL_LOGGER)
        box = FieldMailbox(auth_required=auth_required)
        with box.running():
            async with app_sender_paused(started_app):
                async with sender_for(db, box, **wrong):
                    await register(app, client, *RECIPIENTS)

                    async def three_rounds() -> bool:
                        return len(error_lines(caplog)) >= 3

                    await eventually(three_rounds, "three rounds refused")
                rounds = error_lines(caplog)
                waiting = await rows(db)
                connections_then = box.connections
                # Fixed, and the server restarted: a new sender with the right settings.
                async with sender_for(db, box, **right):
                    await eventually(lambda: all_settled(db), "every message settled")

        # While refused: nothing failed, nothing counted against the messages, nothing accepted.
        assert [(row["outcome"], row["attempts"]) for row in waiting] == [(None, 0)] * 3
        # One round, one try of one message (the oldest, again and again), one error line; not one per message.
        assert [row["last_error"] is not None for row in waiting] == [True, False, False]
        assert said in waiting[0]["last_error"]
        assert len(rounds) <= connections_then <= len(rounds) + 1
        assert all(said in line and "3 messages are waiting, none lost" in line for line in rounds)
        assert not any("refused for good" in line for line in rounds)
        # Then: every message, exactly once, each on its first counted try.
        assert sorted(box.accepted()) == sorted(RECIPIENTS)
        assert [(row["outcome"], row["attempts"]) for row in await rows(db)] == [("sent", 1)] * 3


class AlwaysGreylisting(FieldMailbox):
    """A server that never accepts: 450 to every RCPT TO."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "450 4.2.0 Greylisted, please try again later"


class TestEndOfLife:
    async def test_a_message_past_its_max_age_is_recorded_expired_and_never_sent(
        self, app: FastAPI, started_app: FastAPI, client: AsyncClient, db: Database, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger=MAIL_LOGGER)
        box = FieldMailbox()
        with box.running():
            async with app_sender_paused(started_app):  # enqueued, and aged, before any sender looks
                await register(app, client, "stale@example.com", "recent@example.com", "asker@example.com")
                body = {"email": "asker@example.com"}
                asked = await client.post(app.url_path_for("users:request-password-reset"), json=body)
                assert asked.status_code == 202
                ages = {  # minutes since each was asked for
                    ("email_verification", "stale@example.com"): EMAIL_VERIFICATION_MAIL_MAX_AGE_MINUTES + 1,
                    ("email_verification", "recent@example.com"): EMAIL_VERIFICATION_MAIL_MAX_AGE_MINUTES - 5,
                    ("password_reset", "asker@example.com"): PASSWORD_RESET_MAIL_MAX_AGE_MINUTES + 1,
                }
                for (kind, recipient), minutes in ages.items():
                    await db.execute(
                        "UPDATE outbox_messages SET created_at = now() - make_interval(mins => :minutes)"
                        " WHERE kind = :kind AND recipient = :recipient",
                        {"minutes": minutes, "kind": kind, "recipient": recipient},
                    )
                async with sender_for(db, box):
                    await eventually(lambda: all_settled(db), "every message settled")
        outcomes = {(row["kind"], row["recipient"]): row["outcome"] for row in await rows(db)}
        assert outcomes == {
            ("email_verification", "stale@example.com"): "expired",
            ("email_verification", "recent@example.com"): "sent",
            ("email_verification", "asker@example.com"): "sent",
            ("password_reset", "asker@example.com"): "expired",
        }
        assert sorted(box.accepted()) == ["asker@example.com", "recent@example.com"]  # its verification mail only
        assert [message["Subject"] for message in box.to("asker@example.com")] == [
            "Confirm your email address for Phresh"
        ]
        tokens = await db.fetch_val(
            "SELECT count(*) FROM account_tokens t JOIN outbox_messages m ON m.id = t.message_id"
            " WHERE m.outcome = 'expired'"
        )
        assert tokens == 0  # no link was even made for them
        logged = [r.getMessage() for r in caplog.records if r.name == MAIL_LOGGER]
        assert sum("expired unsent after 0 attempts" in line for line in logged) == 2

    async def test_a_message_refused_for_a_while_until_its_end_of_life_expires(
        self, app: FastAPI, started_app: FastAPI, client: AsyncClient, db: Database
    ) -> None:
        box = AlwaysGreylisting()
        with box.running():
            async with app_sender_paused(started_app), sender_for(db, box):
                await register(app, client, "greylisted@example.com")

                async def refused_once() -> bool:
                    return (await rows(db))[0]["last_error"] is not None

                await eventually(refused_once, "the first refusal")
                # Its end of life comes while it waits for its next try.
                minutes = EMAIL_VERIFICATION_MAIL_MAX_AGE_MINUTES + 1
                await db.execute(
                    "UPDATE outbox_messages SET created_at = now() - make_interval(mins => :minutes)",
                    {"minutes": minutes},
                )
                await eventually(lambda: all_settled(db), "every message settled")
        [row] = await rows(db)
        assert row["outcome"] == "expired" and row["attempts"] >= 1
        assert "450 4.2.0 Greylisted" in row["last_error"]
        assert box.accepted() == []
