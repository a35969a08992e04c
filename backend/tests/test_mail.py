"""Email verification and password reset, over real SMTP: the tests' own server (aiosmtpd) on
127.0.0.1 receives every message; the tests read it, follow its link's token, and check the result.
"""

import asyncio
import email
import email.policy
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient, Response

from app.core.config import (
    BACKEND_DIR,
    LOGIN_MAX_FAILURES_PER_ADDRESS,
    PASSWORD_RESET_MAX_PER_EMAIL,
    PUBLIC_APP_URL,
    VERIFICATION_MAX_PER_USER,
)
from app.models.user import UserPublic
from scripts.live_server import ServerProcess, live_server
from scripts.ports import free_port
from tests.conftest import TEST_DATABASE_URL, Mailbox, bearer, eventually, log_in

PASSWORD = "heatcavslakers"  # test_user's
INVALID_LINK = {"detail": "This link is invalid or has expired. Ask for a new one."}
RESET_REQUESTED = {"detail": "If an account has that email address, a link to reset its password is on its way to it."}


def token_of(message: EmailMessage, path: str) -> str:
    """The token in the message's link, which must open `path` of the client app."""
    body = message.get_content()
    link = next(word for word in body.split() if word.startswith(PUBLIC_APP_URL))
    assert urlparse(link).path == path
    return parse_qs(urlparse(link).query)["token"][0]


async def register(app: FastAPI, client: AsyncClient, email: str, username: str, password: str = PASSWORD) -> Response:
    return await client.post(
        app.url_path_for("users:register-new-user"),
        json={"new_user": {"email": email, "username": username, "password": password}},
    )


async def verify(app: FastAPI, client: AsyncClient, token: str) -> Response:
    return await client.post(app.url_path_for("users:verify-email"), json={"token": token})


async def ask_reset(app: FastAPI, client: AsyncClient, email: str) -> Response:
    return await client.post(app.url_path_for("users:request-password-reset"), json={"email": email})


async def reset(app: FastAPI, client: AsyncClient, token: str, new_password: str) -> Response:
    return await client.post(
        app.url_path_for("users:reset-password"), json={"token": token, "new_password": new_password}
    )


async def reset_token_for(mailbox: Mailbox, email: str) -> str:
    """The token of the reset mail sent to an address (its verification mail comes too)."""
    for message in await mailbox.wait_for(email, 2):
        if message["Subject"] == "Reset your Phresh password":
            return token_of(message, "/reset-password")
    raise AssertionError(f"no reset mail to {email}")


async def outcomes(db: Database) -> list[tuple[str, str, str | None]]:
    rows = await db.fetch_all("SELECT kind, recipient, outcome FROM outbox_messages ORDER BY id")
    return [(row["kind"], row["recipient"], row["outcome"]) for row in rows]


async def all_done(db: Database) -> None:
    """Wait until every message of the outbox has its outcome: none can be sent again after that
    (only a message without one is claimed), so a duplicate would be in the mailbox already."""

    async def done() -> bool:
        found = await outcomes(db)
        return bool(found) and all(outcome for _, _, outcome in found)

    await eventually(done, "every message sent or given up")


class TestEmailVerification:
    async def test_registration_sends_a_link_that_verifies_the_email(
        self, app: FastAPI, client: AsyncClient, mailbox: Mailbox
    ) -> None:
        res = await register(app, client, "new@example.com", "newcomer")
        assert res.status_code == status.HTTP_201_CREATED
        assert res.json()["email_verified"] is False
        [message] = await mailbox.wait_for("new@example.com")
        assert message["Subject"] == "Confirm your email address for Phresh"
        assert message["From"] == "Phresh <no-reply@phresh.io>"
        token = token_of(message, "/verify-email")
        assert len(token) == 43

        verified = await verify(app, client, token)
        assert (verified.status_code, verified.json()) == (200, {"email": "new@example.com", "email_verified": True})
        access_token = res.json()["access_token"]["access_token"]
        me = await client.get(app.url_path_for("users:get-current-user"), headers=bearer(access_token))
        assert me.json()["email_verified"] is True
        again = await verify(app, client, token)  # single use
        assert (again.status_code, again.json()) == (400, INVALID_LINK)

    async def test_the_token_is_stored_only_as_a_hash_and_logged_nowhere(
        self,
        app: FastAPI,
        client: AsyncClient,
        db: Database,
        mailbox: Mailbox,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level("DEBUG")
        await register(app, client, "quiet@example.com", "quietone")
        token = token_of((await mailbox.wait_for("quiet@example.com"))[0], "/verify-email")
        await verify(app, client, token)
        stored = str(await db.fetch_all("SELECT * FROM account_tokens")) + str(
            await db.fetch_all("SELECT * FROM outbox_messages")
        )
        assert token not in stored
        # Phresh's log lines; not those of the tests' own mail server (aiosmtpd logs what it receives).
        logged = "\n".join(record.getMessage() for record in caplog.records if not record.name.startswith("mail.log"))
        assert "Query:" in logged and token not in logged

    async def test_i_can_ask_again_within_limits(
        self, app: FastAPI, authorized_client: AsyncClient, mailbox: Mailbox, test_user: UserPublic
    ) -> None:
        path = app.url_path_for("users:send-verification-email")
        for _ in range(VERIFICATION_MAX_PER_USER):
            res = await authorized_client.post(path)
            assert res.status_code == status.HTTP_202_ACCEPTED
            assert res.json() == {"detail": f"A link to confirm {test_user.email} is on its way to it."}
        assert (await authorized_client.post(path)).status_code == status.HTTP_429_TOO_MANY_REQUESTS
        # (the fixture's registration sent the first one)
        messages = await mailbox.wait_for(test_user.email, VERIFICATION_MAX_PER_USER + 1)
        assert len(messages) == VERIFICATION_MAX_PER_USER + 1
        # every link works until one of them is used; then the email is verified and there is nothing to ask
        assert (await verify(app, authorized_client, token_of(messages[2], "/verify-email"))).status_code == 200
        res = await authorized_client.post(path)
        assert (res.status_code, res.json()) == (400, {"detail": "Your email address is verified already."})

    async def test_a_new_email_is_unverified_and_gets_a_link_of_its_own(
        self, app: FastAPI, client: AsyncClient, mailbox: Mailbox
    ) -> None:
        res = await register(app, client, "first@example.com", "changer")
        headers = bearer(res.json()["access_token"]["access_token"])
        first_token = token_of((await mailbox.wait_for("first@example.com"))[0], "/verify-email")
        changed = await client.put(
            app.url_path_for("users:update-current-user"),
            json={"user_update": {"email": "second@example.com"}},
            headers=headers,
        )
        assert changed.status_code == status.HTTP_200_OK
        # the link sent to the old address no longer verifies anything
        assert (await verify(app, client, first_token)).json() == INVALID_LINK
        second_token = token_of((await mailbox.wait_for("second@example.com"))[0], "/verify-email")
        assert (await verify(app, client, second_token)).json() == {
            "email": "second@example.com",
            "email_verified": True,
        }

    @pytest.mark.parametrize("token", ("A" * 43, "not-a-token", "A" * 128))
    async def test_a_token_of_nothing_is_400(self, app: FastAPI, client: AsyncClient, token: str) -> None:
        res = await verify(app, client, token)
        assert (res.status_code, res.json()) == (400, INVALID_LINK)

    async def test_an_expired_link_is_400(
        self, app: FastAPI, client: AsyncClient, db: Database, mailbox: Mailbox
    ) -> None:
        await register(app, client, "late@example.com", "latecomer")
        token = token_of((await mailbox.wait_for("late@example.com"))[0], "/verify-email")
        await db.execute("UPDATE account_tokens SET expires_at = now() - interval '1 second'")
        assert (await verify(app, client, token)).json() == INVALID_LINK


class TestPasswordReset:
    async def test_the_link_sets_a_new_password_and_ends_every_session(
        self, app: FastAPI, client: AsyncClient, db: Database, mailbox: Mailbox, test_user: UserPublic
    ) -> None:
        before = (await log_in(app, client, test_user.email, PASSWORD)).json()
        res = await ask_reset(app, client, test_user.email)
        assert (res.status_code, res.json()) == (status.HTTP_202_ACCEPTED, RESET_REQUESTED)
        token = await reset_token_for(mailbox, test_user.email)

        done = await reset(app, client, token, "a-whole-new-password")
        assert done.status_code == status.HTTP_200_OK
        assert (await log_in(app, client, test_user.email, PASSWORD)).status_code == status.HTTP_401_UNAUTHORIZED
        assert (await log_in(app, client, test_user.email, "a-whole-new-password")).status_code == 200
        me = await client.get(app.url_path_for("users:get-current-user"), headers=bearer(before["access_token"]))
        assert me.status_code == status.HTTP_401_UNAUTHORIZED
        refreshed = await client.post(
            app.url_path_for("users:refresh-access-token"), json={"refresh_token": before["refresh_token"]}
        )
        assert refreshed.status_code == status.HTTP_401_UNAUTHORIZED
        assert (await reset(app, client, token, "yet-another-password")).json() == INVALID_LINK  # single use
        kinds = [row["kind"] for row in await db.fetch_all("SELECT kind FROM security_events ORDER BY id")]
        assert "password_reset_requested" in kinds and "password_reset" in kinds

    async def test_an_unknown_email_gets_the_same_answer_for_the_same_work(
        self,
        app: FastAPI,
        client: AsyncClient,
        db: Database,
        mailbox: Mailbox,
        test_user: UserPublic,
        count_queries: list[str],
    ) -> None:
        known = await ask_reset(app, client, test_user.email)
        known_queries = list(count_queries)
        count_queries.clear()
        unknown = await ask_reset(app, client, "nobody@example.com")
        assert (unknown.status_code, unknown.json()) == (known.status_code, known.json())
        assert count_queries == known_queries  # the same statements: the account is looked up later
        await mailbox.wait_for(test_user.email, 2)  # its verification mail, and the reset
        await all_done(db)
        assert ("password_reset", "nobody@example.com", "skipped") in await outcomes(db)
        assert mailbox.to("nobody@example.com") == []

    async def test_a_password_changed_any_other_way_kills_the_link(
        self,
        app: FastAPI,
        client: AsyncClient,
        authorized_client: AsyncClient,
        mailbox: Mailbox,
        test_user: UserPublic,
    ) -> None:
        await ask_reset(app, client, test_user.email)
        token = await reset_token_for(mailbox, test_user.email)
        changed = await authorized_client.put(
            app.url_path_for("users:change-password"),
            json={"password_change": {"current_password": PASSWORD, "new_password": "changed-by-hand"}},
        )
        assert changed.status_code == status.HTTP_200_OK
        assert (await reset(app, client, token, "a-whole-new-password")).json() == INVALID_LINK
        assert (await log_in(app, client, test_user.email, "changed-by-hand")).status_code == 200

    async def test_the_link_expires(
        self, app: FastAPI, client: AsyncClient, db: Database, mailbox: Mailbox, test_user: UserPublic
    ) -> None:
        await ask_reset(app, client, test_user.email)
        token = await reset_token_for(mailbox, test_user.email)
        await db.execute("UPDATE account_tokens SET expires_at = now() - interval '1 second'")
        assert (await reset(app, client, token, "a-whole-new-password")).json() == INVALID_LINK

    async def test_the_new_password_follows_the_rules_of_registration(
        self, app: FastAPI, client: AsyncClient, mailbox: Mailbox, test_user: UserPublic
    ) -> None:
        await ask_reset(app, client, test_user.email)
        token = await reset_token_for(mailbox, test_user.email)
        for bad in ("short", "x" * 101):
            assert (await reset(app, client, token, bad)).status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert (await reset(app, client, token, "long-enough")).status_code == status.HTTP_200_OK

    async def test_requests_are_limited_per_email_and_per_address(
        self, app: FastAPI, client: AsyncClient, client_from: Callable[[str], AsyncClient]
    ) -> None:
        for _ in range(PASSWORD_RESET_MAX_PER_EMAIL):
            assert (await ask_reset(app, client, "target@example.com")).status_code == status.HTTP_202_ACCEPTED
        assert (await ask_reset(app, client, "target@example.com")).status_code == status.HTTP_429_TOO_MANY_REQUESTS
        elsewhere = client_from("198.51.100.9")
        assert (await ask_reset(app, elsewhere, "TARGET@example.com")).status_code == 429  # the email's own limit
        spammer = client_from("198.51.100.10")
        answers = [(await ask_reset(app, spammer, f"victim{n}@example.com")).status_code for n in range(21)]
        assert answers == [202] * 20 + [429]

    async def test_a_malformed_email_is_422(self, app: FastAPI, client: AsyncClient) -> None:
        assert (await ask_reset(app, client, "not an email")).status_code == status.HTTP_422_UNPROCESSABLE_CONTENT


class TestNothingLost:
    async def test_mail_asked_for_while_the_mail_server_is_down_arrives_once_it_is_back(
        self, app: FastAPI, client: AsyncClient, db: Database, mailbox: Mailbox, test_user: UserPublic
    ) -> None:
        await mailbox.wait_for(test_user.email)
        mailbox.stop()
        try:
            for n in range(3):
                assert (await register(app, client, f"down{n}@example.com", f"down{n}")).status_code == 201
            assert (await ask_reset(app, client, test_user.email)).status_code == 202

            async def each_tried() -> bool:  # the sender tries each, fails, and keeps it for later
                query = (
                    "SELECT count(*) FROM outbox_messages"
                    " WHERE outcome IS NULL AND attempts >= 1 AND last_error IS NOT NULL"
                )
                return bool(await db.fetch_val(query) == 4)

            await eventually(each_tried, "every message tried while the server is down")
            failed = await db.fetch_all("SELECT attempts, last_error FROM outbox_messages WHERE outcome IS NULL")
            assert len(failed) == 4 and all(row["attempts"] >= 1 and row["last_error"] for row in failed)
        finally:
            mailbox.start()
        for n in range(3):
            assert len(await mailbox.wait_for(f"down{n}@example.com")) == 1
        await mailbox.wait_for(test_user.email, 2)
        await all_done(db)  # a duplicate would have arrived by then
        for n in range(3):
            assert len(mailbox.to(f"down{n}@example.com")) == 1
        assert len(mailbox.to(test_user.email)) == 2  # the verification mail, and the reset
        assert all(outcome == "sent" for _, _, outcome in await outcomes(db))


class BlockingMailbox(Mailbox):
    """A mail server that holds each message at RCPT until released: a send caught mid-way."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.arrived.set()
        while not self.release.is_set():  # noqa: ASYNC110 (set from the test's thread)
            await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def blocking_mailbox() -> Iterator[BlockingMailbox]:
    box = BlockingMailbox(free_port())
    box.start()
    yield box
    box.release.set()
    box.stop()


class TestSenders:
    async def test_a_sender_killed_mid_way_loses_nothing_and_sends_nothing_twice(
        self, started_app: FastAPI, db: Database, blocking_mailbox: BlockingMailbox
    ) -> None:
        async with started_app.state.mail_sender.paused():  # only the servers' senders touch the outbox
            await self.kill_a_sender_mid_way(db, blocking_mailbox)

    async def kill_a_sender_mid_way(self, db: Database, blocking_mailbox: BlockingMailbox) -> None:
        env = {"SMTP_PORT": str(blocking_mailbox.port)}  # on top of this process's
        # The killed server's claims run out soon, for the next server to take its message over.
        killed_env = {**env, "MAIL_CLAIM_SECONDS": "3", "SMTP_TIMEOUT_SECONDS": "2"}
        emails = [f"killed{n}@example.com" for n in range(3)]
        server = ServerProcess(TEST_DATABASE_URL, env=killed_env)
        base_url = server.start()
        try:
            for n, address in enumerate(emails):
                body = {"new_user": {"email": address, "username": f"killed{n}", "password": PASSWORD}}
                assert httpx.post(f"{base_url}/api/users/", json=body).status_code == 201
            assert blocking_mailbox.arrived.wait(60)  # a message is on the wire ...
            server.kill()  # ... when its sender dies
        finally:
            server.stop()
        blocking_mailbox.release.set()
        with live_server(TEST_DATABASE_URL, env=env):  # the next start sends what is left, once
            for address in emails:
                assert len(await blocking_mailbox.wait_for(address)) == 1
            await all_done(db)  # a duplicate would have arrived by then
        for address in emails:
            assert len(blocking_mailbox.to(address)) == 1

    async def test_several_workers_never_send_the_same_message(
        self, app: FastAPI, client: AsyncClient, db: Database, mailbox: Mailbox
    ) -> None:
        # This process's sender and two worker processes', all on one outbox and one mail server.
        with live_server(TEST_DATABASE_URL, workers=2):
            for n in range(20):  # enqueued one after the other while three senders take them
                assert (await register(app, client, f"crowd{n}@example.com", f"crowd{n}")).status_code == 201
            for n in range(20):
                assert len(await mailbox.wait_for(f"crowd{n}@example.com")) == 1
            await all_done(db)  # a duplicate would have arrived by then
        assert [len(mailbox.to(f"crowd{n}@example.com")) for n in range(20)] == [1] * 20


class TestWithoutSmtp:
    async def test_mail_is_written_to_the_local_outbox_and_manage_py_shows_it(
        self, started_app: FastAPI, tmp_path: Path
    ) -> None:
        outbox, log = tmp_path / "outbox", tmp_path / "server.log"
        env = {"SMTP_HOST": "", "MAIL_OUTBOX_DIR": str(outbox)}
        async with started_app.state.mail_sender.paused():  # this process's sender would use SMTP
            with log.open("wb") as output, live_server(TEST_DATABASE_URL, env=env, output=output) as base_url:
                body = {"new_user": {"email": "local@example.com", "username": "local", "password": PASSWORD}}
                assert httpx.post(f"{base_url}/api/users/", json=body).status_code == 201

                async def in_the_folder() -> bool:
                    return bool(list(outbox.glob("*.eml")))

                await eventually(in_the_folder, "the mail written to the outbox folder")
        [written] = outbox.glob("*.eml")
        assert not list(outbox.glob("*.partial"))
        message = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage) and message["To"] == "local@example.com"
        assert len(token_of(message, "/verify-email")) == 43
        assert f"mail to local@example.com written to {written}" in log.read_text()

        shown = subprocess.run(  # noqa: ASYNC221 (the app is paused no more; nothing waits on this loop)
            [sys.executable, "manage.py", "mail"],
            cwd=BACKEND_DIR,
            env={**os.environ, **env, "PHRESH_ENV_FILE": os.devnull},
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 0
        assert "Subject: Confirm your email address for Phresh" in shown.stdout
        token = token_of(message, "/verify-email")
        assert f"{PUBLIC_APP_URL}/verify-email?token={token}\n" in shown.stdout  # whole, ready to copy
        assert f"?token={token}" in written.read_text()  # readable in the file itself too
        assert str(written) in shown.stderr + shown.stdout


class TestLoginRequiresVerifiedEmail:
    async def test_an_unverified_account_is_told_to_verify_and_gets_a_new_link(self, mailbox: Mailbox) -> None:
        with live_server(TEST_DATABASE_URL, env={"LOGIN_REQUIRES_VERIFIED_EMAIL": "1"}) as base_url:
            body = {"new_user": {"email": "strict@example.com", "username": "strict", "password": PASSWORD}}
            registered = httpx.post(f"{base_url}/api/users/", json=body)
            assert registered.status_code == 201
            assert registered.json()["access_token"] is None  # no session before the email is verified
            form = {"username": "strict@example.com", "password": PASSWORD}
            refused = httpx.post(f"{base_url}/api/users/login/token/", data=form)
            assert refused.status_code == status.HTTP_403_FORBIDDEN
            assert refused.json() == {
                "detail": "Confirm your email address before you log in: a new link is on its way to it."
            }
            wrong = httpx.post(f"{base_url}/api/users/login/token/", data={**form, "password": "wrong-password"})
            assert wrong.status_code == status.HTTP_401_UNAUTHORIZED  # only the right password learns that
            messages = await mailbox.wait_for("strict@example.com", 2)
            assert len(messages) == 2  # at registration, and at the refused login
            token = token_of(messages[-1], "/verify-email")
            assert httpx.post(f"{base_url}/api/users/verify-email/", json={"token": token}).status_code == 200
            assert httpx.post(f"{base_url}/api/users/login/token/", data=form).status_code == status.HTTP_200_OK


class RefusingMailbox(Mailbox):
    """A mail server that refuses every recipient for good (550)."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "550 No such mailbox here"


class TestRefusals:
    async def test_a_permanent_refusal_is_recorded_not_retried(
        self, app: FastAPI, started_app: FastAPI, client: AsyncClient, db: Database
    ) -> None:
        refusing = RefusingMailbox(free_port())
        refusing.start()
        env = {"SMTP_PORT": str(refusing.port)}
        try:
            async with started_app.state.mail_sender.paused():
                with live_server(TEST_DATABASE_URL, env=env) as base_url:
                    body = {"new_user": {"email": "bounce@example.com", "username": "bounce", "password": PASSWORD}}
                    assert httpx.post(f"{base_url}/api/users/", json=body).status_code == 201
                    await all_done(db)
        finally:
            refusing.stop()
        row = await db.fetch_one("SELECT outcome, attempts, last_error FROM outbox_messages")
        assert row is not None
        assert (row["outcome"], row["attempts"]) == ("failed", 1)
        assert "550" in row["last_error"]

    async def test_invalid_tokens_are_limited_per_address(
        self, app: FastAPI, client_from: Callable[[str], AsyncClient]
    ) -> None:
        guesser = client_from("203.0.113.50")
        codes = [(await verify(app, guesser, "C" * 43)).status_code for _ in range(LOGIN_MAX_FAILURES_PER_ADDRESS)]
        assert codes == [400] * LOGIN_MAX_FAILURES_PER_ADDRESS
        assert (await reset(app, guesser, "C" * 43, "a-new-password")).status_code == 429
        assert (await verify(app, client_from("203.0.113.51"), "C" * 43)).status_code == 400
