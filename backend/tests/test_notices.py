"""Account notices, over real SMTP: a mail to the account's address when its password, its email
or its second factor changes, or the account is deleted. Each says what happened, when and from
where, and where to get help; none carries a link that acts on the account or a token; each is
written in the transaction of its change."""

import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage

import httpx
import pyotp
from databases import Database
from fastapi import FastAPI
from httpx import AsyncClient

from app.core.config import SUPPORT_CONTACT
from app.models.user import UserInDB, UserPublic
from app.services.notices import NoticeKind, queue_notice
from tests.conftest import Mailbox, create_user, eventually, log_in
from tests.test_mail import ask_reset, reset, reset_token_for
from tests.test_mfa import enrol

PASSWORD = "heatcavslakers"  # test_user's
NEW_PASSWORD = "a brand new password"
# Anything that could be a token: a long run of base64url characters, or a link with a query.
TOKEN_LIKE = re.compile(r"[A-Za-z0-9_-]{32,}|https?://\S*\?")


async def notice(mailbox: Mailbox, address: str, kind: NoticeKind) -> EmailMessage:
    """The one notice of this kind sent to the address (waiting for it to arrive)."""

    async def arrived() -> bool:
        return any(message["X-Phresh-Kind"] == kind.value for message in mailbox.to(address))

    await eventually(arrived, f"the {kind.value} notice to {address}")
    [message] = [message for message in mailbox.to(address) if message["X-Phresh-Kind"] == kind.value]
    return message


def assert_a_notice(message: EmailMessage, *, username: str) -> str:
    """What every notice holds: the user's name, the day, where to get help, and no token."""
    body = message.get_content()
    assert f"Hello {username}," in body
    assert f"on {datetime.now(UTC):%Y-%m-%d} at " in body and " UTC" in body
    assert SUPPORT_CONTACT in body
    assert not TOKEN_LIKE.search(body.replace(SUPPORT_CONTACT, "")), body
    return str(body)


async def change_password(app: FastAPI, client: AsyncClient, current: str, new: str) -> int:
    res = await client.put(
        app.url_path_for("users:change-password"),
        json={"password_change": {"current_password": current, "new_password": new}},
    )
    return res.status_code


class TestPasswordChanged:
    async def test_a_password_change_is_told_to_the_account_with_when_and_where(
        self,
        app: FastAPI,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        mailbox: Mailbox,
        db: Database,
    ) -> None:
        assert await change_password(app, client_for(test_user), PASSWORD, NEW_PASSWORD) == 200
        message = await notice(mailbox, test_user.email, NoticeKind.password_changed)
        assert message["Subject"] == "Your Phresh password was changed"
        body = assert_a_notice(message, username=test_user.username)
        assert "from the address 127.0.0.1" in body and "Every other session" in body
        # no token was minted for it
        minted = await db.fetch_val(
            "SELECT count(*) FROM account_tokens t JOIN outbox_messages m ON m.id = t.message_id"
            " WHERE m.kind = 'password_changed'"
        )
        assert minted == 0

    async def test_a_reset_is_told_too(
        self, app: FastAPI, client: AsyncClient, test_user: UserPublic, mailbox: Mailbox
    ) -> None:
        assert (await ask_reset(app, client, test_user.email)).status_code == 202
        token = await reset_token_for(mailbox, test_user.email)
        assert (await reset(app, client, token, NEW_PASSWORD)).status_code == 200
        message = await notice(mailbox, test_user.email, NoticeKind.password_changed)
        body = assert_a_notice(message, username=test_user.username)
        assert "was changed with a reset link" in body

    async def test_no_change_without_its_notice_the_two_are_one_transaction(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        # The database refuses this one kind of message for a moment: the change goes with it.
        await db.execute(
            "ALTER TABLE outbox_messages ADD CONSTRAINT ck_test_no_password_notice"
            " CHECK (kind <> 'password_changed') NOT VALID"
        )
        try:
            authorized = client_for(test_user)
            failing = AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://testserver",
                headers=authorized.headers,
                auth=authorized.auth,
            )
            async with failing:
                assert await change_password(app, failing, PASSWORD, NEW_PASSWORD) == 500
        finally:
            await db.execute("ALTER TABLE outbox_messages DROP CONSTRAINT ck_test_no_password_notice")
        assert (await log_in(app, client, test_user.email, PASSWORD)).status_code == 200
        assert (await log_in(app, client, test_user.email, NEW_PASSWORD)).status_code == 401


class TestEmailChanged:
    async def test_the_old_address_is_told_with_the_new_one_when_and_where(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic, mailbox: Mailbox
    ) -> None:
        res = await client_for(test_user).put(
            app.url_path_for("users:update-current-user"), json={"user_update": {"email": "lebron@example.com"}}
        )
        assert res.status_code == 200
        message = await notice(mailbox, test_user.email, NoticeKind.email_changed)
        body = assert_a_notice(message, username=test_user.username)
        assert f"from {test_user.email} to lebron@example.com" in body
        assert "from the address 127.0.0.1" in body
        # the new address gets its verification mail, and no notice
        verification = await mailbox.wait_for("lebron@example.com")
        assert [m["X-Phresh-Kind"] for m in verification] == ["email_verification"]

    async def test_no_notice_when_the_address_stays(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic, db: Database
    ) -> None:
        update = app.url_path_for("users:update-current-user")
        client = client_for(test_user)
        assert (await client.put(update, json={"user_update": {"username": "kingjames"}})).status_code == 200
        same = test_user.email.upper()
        assert (await client.put(update, json={"user_update": {"email": same}})).status_code == 200
        assert await db.fetch_val("SELECT count(*) FROM outbox_messages WHERE kind = 'email_changed'") == 0

    async def test_a_refused_change_writes_no_notice(
        self,
        app: FastAPI,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        test_user2: UserPublic,
        db: Database,
    ) -> None:
        res = await client_for(test_user).put(
            app.url_path_for("users:update-current-user"), json={"user_update": {"email": test_user2.email}}
        )
        assert res.status_code == 400
        assert await db.fetch_val("SELECT count(*) FROM outbox_messages WHERE kind = 'email_changed'") == 0


class TestSecondFactorNotices:
    async def test_on_and_off_are_told(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic, mailbox: Mailbox
    ) -> None:
        client = client_for(test_user)
        totp, _ = await enrol(app, client)
        on = assert_a_notice(
            await notice(mailbox, test_user.email, NoticeKind.mfa_enabled), username=test_user.username
        )
        assert "Two-factor sign-in was turned on" in on and "from the address 127.0.0.1" in on
        res = await client.post(app.url_path_for("users:disable-mfa"), json={"password": PASSWORD, "code": totp.now()})
        assert res.status_code == 200
        off = await notice(mailbox, test_user.email, NoticeKind.mfa_disabled)
        assert "Two-factor sign-in was turned off" in assert_a_notice(off, username=test_user.username)

    async def test_a_superusers_reset_is_told_without_the_superusers_address(
        self,
        app: FastAPI,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        test_superuser: UserInDB,
        mailbox: Mailbox,
    ) -> None:
        await enrol(app, client_for(test_user))
        reset_url = app.url_path_for("users:reset-user-mfa", user_id=str(test_user.id))
        assert (await client_for(test_superuser).post(reset_url)).status_code == 200
        message = await notice(mailbox, test_user.email, NoticeKind.mfa_reset)
        body = assert_a_notice(message, username=test_user.username)
        assert "A Phresh administrator turned off two-factor sign-in" in body and "127.0.0.1" not in body

    async def test_a_reset_of_a_factor_that_was_off_tells_nobody(
        self,
        app: FastAPI,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        test_superuser: UserInDB,
        db: Database,
    ) -> None:
        reset_url = app.url_path_for("users:reset-user-mfa", user_id=str(test_user.id))
        res = await client_for(test_superuser).post(reset_url)
        assert res.json()["was_enabled"] is False
        assert await db.fetch_val("SELECT count(*) FROM outbox_messages WHERE kind = 'mfa_reset'") == 0


class TestAccountDeleted:
    async def test_the_notice_outlives_the_account_it_tells_of(self, db: Database, mailbox: Mailbox) -> None:
        user = await create_user(db, email="leaving@example.com", username="leaving", password=PASSWORD)
        async with db.transaction():
            await queue_notice(db, user, NoticeKind.account_deleted, client_address="192.0.2.7")
            await db.execute("DELETE FROM users WHERE id = :id", {"id": user.id})
        message = await notice(mailbox, "leaving@example.com", NoticeKind.account_deleted)
        body = assert_a_notice(message, username="leaving")
        assert "was deleted" in body and "from the address 192.0.2.7" in body


class TestEveryNotice:
    async def test_each_kind_has_its_subject_and_a_totp_secret_is_in_none(
        self,
        app: FastAPI,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        mailbox: Mailbox,
        db: Database,
    ) -> None:
        totp, codes = await enrol(app, client_for(test_user))
        message = await notice(mailbox, test_user.email, NoticeKind.mfa_enabled)
        body = message.get_content()
        assert totp.secret not in body and not any(code in body for code in codes)
        assert pyotp.TOTP(totp.secret).now() not in body
        kinds = {row["kind"] for row in await db.fetch_all("SELECT DISTINCT kind FROM outbox_messages")}
        assert kinds <= {kind.value for kind in NoticeKind} | {"email_verification"}
