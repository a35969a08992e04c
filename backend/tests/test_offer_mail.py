"""Mail about offers, over real SMTP (issue 24, "Hearing about offers"): a cleaning's owner hears of
new offers (at most one mail per cleaning per quarter hour, listing what came in), a cleaner of
their offer accepted or rejected, an owner of an accepted cleaner backing out. Each kind is on or
off per user; each mail has an RFC 8058 one-click unsubscribe that works without logging in, for
its user and kind only. Each mail is written in the transaction of its change: one that rolls back
sends nothing, one that commits always sends."""

import asyncio
import hashlib
import hmac
import re
from base64 import urlsafe_b64encode
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient, Response

from app.core.config import OFFER_DIGEST_MINUTES, PUBLIC_API_URL, PUBLIC_APP_URL
from app.models.cleaning import CleaningInDB
from app.models.notification import NotificationKind
from app.models.user import AnyUser, UserInDB, UserPublic
from app.services.offer_mail import unsubscribe_token
from tests.conftest import Mailbox, bearer, create_user, eventually, session_token
from tests.test_mail import ask_reset

Clients = Callable[[AnyUser], AsyncClient]

INVALID_LINK = {"detail": "This unsubscribe link is not valid. Choose which mails you get in your settings."}
ALL_ON = {"offer_received": True, "offer_accepted": True, "offer_rejected": True, "offer_cancelled": True}


# --- helpers ---------------------------------------------------------------------------------------


def text(message: EmailMessage) -> str:
    """The message's text, its lines ended as Python's (SMTP carries them with CRLF)."""
    return str(message.get_content()).replace("\r\n", "\n")


def kind_of(message: EmailMessage) -> str:
    return str(message["X-Phresh-Kind"])


OFFER_KINDS = ("offer_received", "offer_accepted", "offer_rejected", "offer_cancelled")


def offer_mail_to(mailbox: Mailbox, address: str) -> list[EmailMessage]:
    """The mail about offers sent to an address (a user registered through the API gets a
    verification mail too)."""
    return [message for message in mailbox.to(address) if kind_of(message) in OFFER_KINDS]


def of_kind(mailbox: Mailbox, address: str, kind: str) -> list[EmailMessage]:
    return [message for message in mailbox.to(address) if kind_of(message) == kind]


async def wait_for_kind(mailbox: Mailbox, address: str, kind: str, count: int = 1) -> list[EmailMessage]:
    async def arrived() -> bool:
        return len(of_kind(mailbox, address, kind)) >= count

    await eventually(arrived, f"{count} {kind} mail(s) to {address}")
    return of_kind(mailbox, address, kind)


async def settled(db: Database) -> None:
    """Every mail in the outbox that is due has been handled (sent, skipped or failed)."""

    async def nothing_due() -> bool:
        due = await db.fetch_val(
            "SELECT count(*) FROM outbox_messages WHERE outcome IS NULL AND next_attempt_at <= now()"
        )
        return int(due) == 0

    await eventually(nothing_due, "the due mail sent")


def listed(message: EmailMessage) -> list[str]:
    """The usernames a digest lists, in its order."""
    return re.findall(r"^- ([A-Za-z0-9_.-]+)", text(message), re.MULTILINE)


def one_click_path(message: EmailMessage) -> str:
    """The List-Unsubscribe URL of a message, as a path and query of this API (checked to be ours)."""
    header = str(message["List-Unsubscribe"])
    match = re.fullmatch(r"<([^>]+)>", header)
    assert match, header
    url = urlparse(match[1])
    assert f"{url.scheme}://{url.netloc}" == PUBLIC_API_URL
    return f"{url.path}?{url.query}"


def token_in(message: EmailMessage) -> str:
    return parse_qs(urlparse(one_click_path(message)).query)["token"][0]


async def one_click(client: AsyncClient, message: EmailMessage) -> Response:
    """What a mail provider does for RFC 8058: POST the body `List-Unsubscribe=One-Click` to the
    header's URL, with no cookie or credentials."""
    return await client.post(
        one_click_path(message),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def new_cleaning(client: AsyncClient, app: FastAPI, name: str = "windows, inside and out") -> int:
    res = await client.post(
        app.url_path_for("cleanings:create-cleaning"),
        json={"new_cleaning": {"name": name, "price": 30, "cleaning_type": "full_clean"}},
    )
    assert res.status_code == status.HTTP_201_CREATED, res.text
    return int(res.json()["id"])


async def offer(app: FastAPI, client: AsyncClient, cleaning_id: int) -> Response:
    return await client.post(app.url_path_for("offers:create-offer", cleaning_id=cleaning_id))


async def accept(app: FastAPI, client: AsyncClient, cleaning_id: int, username: str) -> Response:
    return await client.put(
        app.url_path_for("offers:accept-offer-from-user", cleaning_id=cleaning_id, username=username)
    )


async def cancel(app: FastAPI, client: AsyncClient, cleaning_id: int) -> Response:
    return await client.put(app.url_path_for("offers:cancel-offer-from-user", cleaning_id=cleaning_id))


async def rescind(app: FastAPI, client: AsyncClient, cleaning_id: int) -> Response:
    return await client.delete(app.url_path_for("offers:rescind-offer-from-user", cleaning_id=cleaning_id))


async def preferences(app: FastAPI, client: AsyncClient) -> dict[str, bool]:
    res = await client.get(app.url_path_for("users:get-notification-preferences"))
    assert res.status_code == status.HTTP_200_OK, res.text
    body: dict[str, bool] = res.json()
    return body


async def set_preferences(app: FastAPI, client: AsyncClient, **changes: object) -> Response:
    return await client.put(
        app.url_path_for("users:update-notification-preferences"), json={"notification_preferences": changes}
    )


async def cleaners(db: Database, count: int) -> list[UserInDB]:
    return [
        await create_user(db, email=f"cleaner{i}@example.com", username=f"cleaner{i}", password="a good password")
        for i in range(count)
    ]


async def outbox_rows(db: Database, kind: str) -> list[dict[str, object]]:
    rows = await db.fetch_all(
        "SELECT id, recipient, outcome, cleaning_id, details->>'users' AS users, next_attempt_at, finished_at"
        " FROM outbox_messages WHERE kind = :kind ORDER BY id",
        {"kind": kind},
    )
    return [dict(row._mapping) for row in rows]


# --- new offers: the owner's digest ----------------------------------------------------------------


class TestNewOffers:
    async def test_the_owner_hears_of_the_first_offer_at_once_with_a_link_and_a_one_click_unsubscribe(
        self, app: FastAPI, client_for: Clients, test_user: UserPublic, test_user2: UserPublic, mailbox: Mailbox
    ) -> None:
        cleaning_id = await new_cleaning(client_for(test_user), app, name="the attic")
        assert (await offer(app, client_for(test_user2), cleaning_id)).status_code == status.HTTP_201_CREATED

        [message] = await wait_for_kind(mailbox, test_user.email, "offer_received")
        assert message["Subject"] == "New offers for your Phresh cleaning"
        body = text(message)
        assert body.startswith(f"Hello {test_user.username},\n")
        assert f'A new offer came in for your cleaning "the attic" (cleaning {cleaning_id})' in body
        assert listed(message) == [test_user2.username]
        assert f"{PUBLIC_APP_URL}/cleaning-jobs/{cleaning_id}" in body
        # RFC 8058: the one-click URL is this API's unsubscribe route, POSTed with this body
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        path = one_click_path(message)
        assert urlparse(path).path == app.url_path_for("users:unsubscribe")
        # and the text links the client app's page with the same token
        token = token_in(message)
        assert f"{PUBLIC_APP_URL}/unsubscribe?token={token}\n" in body
        assert token.startswith(f"{test_user.id}.offer_received.")

    async def test_offers_within_the_quarter_hour_come_together_in_the_next_mail(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user: UserPublic,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_user5: UserPublic,
        mailbox: Mailbox,
    ) -> None:
        cleaning_id = await new_cleaning(client_for(test_user), app)
        assert (await offer(app, client_for(test_user2), cleaning_id)).status_code == 201
        await wait_for_kind(mailbox, test_user.email, "offer_received")
        await settled(db)
        for user in (test_user3, test_user4, test_user5):
            assert (await offer(app, client_for(user), cleaning_id)).status_code == 201
        assert (await rescind(app, client_for(test_user5), cleaning_id)).status_code == 200

        first, waiting = await outbox_rows(db, "offer_received")
        assert first["outcome"] == "sent" and first["users"] == str(test_user2.id)
        # the three joined one digest, due a quarter hour after the first mail went out
        assert waiting["outcome"] is None
        assert waiting["users"] == f"{test_user3.id} {test_user4.id} {test_user5.id}"
        assert waiting["next_attempt_at"] == first["finished_at"] + timedelta(minutes=OFFER_DIGEST_MINUTES)
        await asyncio.sleep(1.0)  # five of the sender's polls: nothing more goes out meanwhile
        assert len(of_kind(mailbox, test_user.email, "offer_received")) == 1

        # The quarter hour passes.
        await db.execute("UPDATE outbox_messages SET next_attempt_at = now() WHERE id = :id", {"id": waiting["id"]})
        _, second = await wait_for_kind(mailbox, test_user.email, "offer_received", 2)
        assert listed(second) == [test_user3.username, test_user4.username, test_user5.username]
        body = text(second)
        assert "3 new offers came in for your cleaning" in body
        assert f"- {test_user5.username} (since withdrawn)\n" in body  # withdrawn before the mail went out
        assert re.search(rf"^- {test_user3.username}, on \d{{4}}-\d\d-\d\d at \d\d:\d\d UTC$", body, re.MULTILINE)

        # and the next offer waits for a quarter hour after this one
        [late] = await cleaners(db, 1)
        assert (await offer(app, client_for(late), cleaning_id)).status_code == 201
        rows = await outbox_rows(db, "offer_received")
        assert len(rows) == 3 and rows[2]["outcome"] is None
        assert rows[2]["next_attempt_at"] == rows[1]["finished_at"] + timedelta(minutes=OFFER_DIGEST_MINUTES)

    async def test_offers_made_at_the_same_moment_start_one_digest_and_each_is_told_once(
        self, app: FastAPI, client_for: Clients, db: Database, test_user: UserPublic, mailbox: Mailbox
    ) -> None:
        cleaning_id = await new_cleaning(client_for(test_user), app)
        users = await cleaners(db, 12)
        answers = await asyncio.gather(*(offer(app, client_for(user), cleaning_id) for user in users))
        assert [answer.status_code for answer in answers] == [201] * len(users)

        await wait_for_kind(mailbox, test_user.email, "offer_received")
        await settled(db)
        rows = await outbox_rows(db, "offer_received")
        assert 1 <= len(rows) <= 2  # the first mail, and at most one digest waiting
        if len(rows) == 2:
            assert rows[1]["outcome"] is None
            await db.execute("UPDATE outbox_messages SET next_attempt_at = now() WHERE id = :id", {"id": rows[1]["id"]})
            await wait_for_kind(mailbox, test_user.email, "offer_received", 2)
        messages = of_kind(mailbox, test_user.email, "offer_received")
        told = [username for message in messages for username in listed(message)]
        assert sorted(told) == sorted(user.username for user in users)  # each once, none lost

    async def test_offers_on_two_cleanings_are_told_apart(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user: UserPublic,
        test_user2: UserPublic,
        test_user3: UserPublic,
        mailbox: Mailbox,
    ) -> None:
        owner = client_for(test_user)
        first, second = await new_cleaning(owner, app, name="first"), await new_cleaning(owner, app, name="second")
        assert (await offer(app, client_for(test_user2), first)).status_code == 201
        assert (await offer(app, client_for(test_user3), second)).status_code == 201
        messages = await wait_for_kind(mailbox, test_user.email, "offer_received", 2)
        assert sorted(listed(message)[0] for message in messages) == sorted([test_user2.username, test_user3.username])


# --- decisions: accepted, rejected, cancelled ------------------------------------------------------


class TestDecisions:
    async def test_accepting_tells_the_cleaner_and_rejects_the_others_by_mail(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user_list: list[UserPublic],
        test_cleaning_with_offers: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        cleaning = test_cleaning_with_offers
        assert (await accept(app, client_for(test_user2), cleaning.id, test_user3.username)).status_code == 200

        [accepted] = await wait_for_kind(mailbox, test_user3.email, "offer_accepted")
        assert accepted["Subject"] == "Your Phresh offer was accepted"
        body = text(accepted)
        assert body.startswith(f"Hello {test_user3.username},\n")
        assert f'{test_user2.username} accepted your offer for the cleaning "{cleaning.name}"' in body
        assert f"{PUBLIC_APP_URL}/cleaning-jobs/{cleaning.id}" in body
        assert token_in(accepted).startswith(f"{test_user3.id}.offer_accepted.")
        for other in test_user_list[1:]:
            [rejected] = await wait_for_kind(mailbox, other.email, "offer_rejected")
            assert rejected["Subject"] == "Your Phresh offer was not accepted"
            assert f"{test_user2.username} accepted another offer" in text(rejected)
            assert token_in(rejected).startswith(f"{other.id}.offer_rejected.")
        await settled(db)
        assert of_kind(mailbox, test_user3.email, "offer_rejected") == []
        assert [kind_of(message) for message in offer_mail_to(mailbox, test_user2.email)] == ["offer_received"]

    async def test_a_cleaner_backing_out_is_told_to_the_owner(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        cleaning = test_cleaning_with_accepted_offer
        assert (await cancel(app, client_for(test_user3), cleaning.id)).status_code == 200
        [message] = await wait_for_kind(mailbox, test_user2.email, "offer_cancelled")
        assert message["Subject"] == "A cleaner backed out of your Phresh cleaning"
        body = text(message)
        assert f'{test_user3.username} backed out of your cleaning "{cleaning.name}"' in body
        assert "the offers you had not accepted are pending again" in body
        assert token_in(message).startswith(f"{test_user2.id}.offer_cancelled.")

    async def test_an_accepted_cleaner_who_deletes_their_account_is_told_to_the_owner_as_leaving(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        # Leaving cancels the accepted offer as backing out does: the owner hears of it, told why.
        deletion = await client_for(test_user3).request(
            "DELETE",
            app.url_path_for("users:delete-current-user"),
            json={"account_deletion": {"password": "adastra"}},
        )
        assert deletion.status_code == 200 and deletion.json()["offers_backed_out"] == 1, deletion.text
        [message] = await wait_for_kind(mailbox, test_user2.email, "offer_cancelled")
        body = text(message)
        cleaning = test_cleaning_with_accepted_offer
        assert f'The cleaner you accepted for your cleaning "{cleaning.name}" (cleaning {cleaning.id}) has left' in body
        assert "the offers you had not accepted are pending again" in body
        assert test_user3.username not in body and test_user3.email not in body

    async def test_a_pending_offer_on_a_cleaning_whose_owner_leaves_is_told_as_rejected(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        # The cleaning stays (its job was agreed), and an offer made on it since can never be accepted.
        [late] = await cleaners(db, 1)
        assert (await offer(app, client_for(late), test_cleaning_with_accepted_offer.id)).status_code == 201
        deletion = await client_for(test_user2).request(
            "DELETE",
            app.url_path_for("users:delete-current-user"),
            json={"account_deletion": {"password": "tennistwins"}},
        )
        assert deletion.status_code == 200, deletion.text
        [message] = await wait_for_kind(mailbox, late.email, "offer_rejected")
        body = text(message)
        cleaning = test_cleaning_with_accepted_offer
        assert f'The owner of the cleaning "{cleaning.name}" (cleaning {cleaning.id}) has left Phresh' in body
        assert test_user2.username not in body and test_user2.email not in body

    async def test_each_mail_goes_to_the_address_the_account_has_when_it_is_sent(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        async with app.state.mail_sender.paused():
            assert (
                await accept(app, client_for(test_user2), test_cleaning_with_offers.id, "bradpitt")
            ).status_code == 200
            await db.execute("UPDATE users SET email = 'brad.new@example.com' WHERE id = :id", {"id": test_user3.id})
        await wait_for_kind(mailbox, "brad.new@example.com", "offer_accepted")
        assert mailbox.to(test_user3.email) == []


# --- preferences -----------------------------------------------------------------------------------


class TestPreferences:
    async def test_every_kind_is_on_until_turned_off(
        self, app: FastAPI, client_for: Clients, test_user: UserPublic
    ) -> None:
        assert await preferences(app, client_for(test_user)) == ALL_ON

    async def test_a_put_changes_the_kinds_it_names_and_no_other(
        self, app: FastAPI, client_for: Clients, test_user: UserPublic, test_user2: UserPublic
    ) -> None:
        client = client_for(test_user)
        res = await set_preferences(app, client, offer_rejected=False, offer_received=False)
        assert res.status_code == 200
        assert res.json() == {**ALL_ON, "offer_rejected": False, "offer_received": False}
        res = await set_preferences(app, client, offer_received=True)
        assert res.json() == {**ALL_ON, "offer_rejected": False}
        assert await preferences(app, client) == {**ALL_ON, "offer_rejected": False}
        assert (await set_preferences(app, client)).json() == {**ALL_ON, "offer_rejected": False}  # nothing named
        assert await preferences(app, client_for(test_user2)) == ALL_ON  # mine only

    @pytest.mark.parametrize(
        "body",
        (
            {"notification_preferences": {"offer_recieved": False}},  # a misspelt kind
            {"notification_preferences": {"offer_received": "sometimes"}},
            {"notification_preferences": {"password_reset": False}},  # account mail is not optional
            {"notification_preferences": []},
            {"offer_received": False},  # not under its key
        ),
    )
    async def test_bad_input_is_refused_and_changes_nothing(
        self, app: FastAPI, client_for: Clients, test_user: UserPublic, body: object
    ) -> None:
        client = client_for(test_user)
        res = await client.put(app.url_path_for("users:update-notification-preferences"), json=body)
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert await preferences(app, client) == ALL_ON

    async def test_both_routes_want_a_login(self, app: FastAPI, client: AsyncClient) -> None:
        assert (await client.get(app.url_path_for("users:get-notification-preferences"))).status_code == 401
        assert (await set_preferences(app, client, offer_received=False)).status_code == 401

    async def test_a_kind_turned_off_is_not_sent_and_the_others_are(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_user5: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        assert (await set_preferences(app, client_for(test_user4), offer_rejected=False)).status_code == 200
        assert (await accept(app, client_for(test_user2), test_cleaning_with_offers.id, "bradpitt")).status_code == 200
        await wait_for_kind(mailbox, test_user5.email, "offer_rejected")
        await wait_for_kind(mailbox, test_user3.email, "offer_accepted")
        await settled(db)
        assert offer_mail_to(mailbox, test_user4.email) == []
        recipients = {row["recipient"] for row in await outbox_rows(db, "offer_rejected")}
        assert test_user4.email not in recipients  # not even written

    async def test_a_kind_turned_off_while_its_digest_waits_stops_that_digest(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user: UserPublic,
        test_user2: UserPublic,
        test_user3: UserPublic,
        mailbox: Mailbox,
    ) -> None:
        owner = client_for(test_user)
        cleaning_id = await new_cleaning(owner, app)
        assert (await offer(app, client_for(test_user2), cleaning_id)).status_code == 201
        await wait_for_kind(mailbox, test_user.email, "offer_received")
        await settled(db)
        assert (await offer(app, client_for(test_user3), cleaning_id)).status_code == 201
        assert (await set_preferences(app, owner, offer_received=False)).status_code == 200
        await db.execute("UPDATE outbox_messages SET next_attempt_at = now() WHERE outcome IS NULL")
        await settled(db)
        assert [row["outcome"] for row in await outbox_rows(db, "offer_received")] == ["sent", "skipped"]
        assert len(offer_mail_to(mailbox, test_user.email)) == 1

    async def test_account_mail_is_not_optional_and_carries_no_unsubscribe(
        self, app: FastAPI, client: AsyncClient, client_for: Clients, test_user: UserPublic, mailbox: Mailbox
    ) -> None:
        everything_off = dict.fromkeys(ALL_ON, False)
        assert (await set_preferences(app, client_for(test_user), **everything_off)).json() == everything_off
        assert (await ask_reset(app, client, test_user.email)).status_code == 202
        await wait_for_kind(mailbox, test_user.email, "password_reset")
        for message in mailbox.to(test_user.email):
            assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None


# --- one-click unsubscribe -------------------------------------------------------------------------


class TestOneClickUnsubscribe:
    async def test_a_post_to_the_headers_url_without_login_turns_that_kind_off_for_that_user(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_user5: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        owner = client_for(test_user2)
        assert (await accept(app, owner, test_cleaning_with_offers.id, test_user3.username)).status_code == 200
        [rejected] = await wait_for_kind(mailbox, test_user4.email, "offer_rejected")

        res = await one_click(client, rejected)
        assert res.status_code == status.HTTP_200_OK
        assert res.json() == {
            "username": test_user4.username,
            "kind": "offer_rejected",
            "subscribed": False,
            "detail": "You will no longer get mail about your offers being rejected."
            " Turn it back on any time in your settings.",
        }
        assert await preferences(app, client_for(test_user4)) == {**ALL_ON, "offer_rejected": False}
        assert await preferences(app, client_for(test_user3)) == ALL_ON  # another user's stay as they are
        assert (await one_click(client, rejected)).status_code == 200  # again: nothing more changes

        # The next rejection is not sent to them; an acceptance still is.
        await settled(db)
        assert (await cancel(app, client_for(test_user3), test_cleaning_with_offers.id)).status_code == 200
        assert (await accept(app, owner, test_cleaning_with_offers.id, test_user4.username)).status_code == 200
        await wait_for_kind(mailbox, test_user4.email, "offer_accepted")
        await wait_for_kind(mailbox, test_user5.email, "offer_rejected", 2)  # rejected again
        await settled(db)
        assert len(of_kind(mailbox, test_user4.email, "offer_rejected")) == 1

    async def test_a_get_of_the_link_changes_nothing(
        self, app: FastAPI, client: AsyncClient, client_for: Clients, test_user: UserPublic
    ) -> None:
        token = unsubscribe_token(user_id=test_user.id, kind=NotificationKind.offer_received)
        res = await client.get(app.url_path_for("users:preview-unsubscribe"), params={"token": token})
        assert res.status_code == status.HTTP_200_OK
        assert res.json() == {
            "username": test_user.username,
            "kind": "offer_received",
            "subscribed": True,
            "detail": "POST to this link to stop mail about new offers on your cleanings.",
        }
        assert await preferences(app, client_for(test_user)) == ALL_ON

    async def test_a_token_works_for_its_user_and_kind_only(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Clients,
        db: Database,
        test_user: UserPublic,
        test_user2: UserPublic,
    ) -> None:
        mine = unsubscribe_token(user_id=test_user.id, kind=NotificationKind.offer_rejected)
        user_id, kind, signature = mine.split(".")
        other_key = "another-secret-key-of-32-bytes-or-more!!"
        forged = [
            f"{test_user2.id}.{kind}.{signature}",  # another user's id under my signature
            f"{user_id}.offer_accepted.{signature}",  # another kind
            f"{user_id}.password_reset.{signature}",  # account mail
            f"{user_id}.{kind}.{signature[:-1]}A" if signature[-1] != "A" else f"{user_id}.{kind}.{signature[:-1]}B",
            f"{user_id}.{kind}",
            "not a token",
        ]
        # made as ours are, with another SECRET_KEY
        key = hmac.new(other_key.encode(), b"phresh:unsubscribe:v1", hashlib.sha256).digest()
        foreign = urlsafe_b64encode(hmac.new(key, f"{user_id}.{kind}".encode(), hashlib.sha256).digest())
        forged.append(f"{user_id}.{kind}.{foreign.rstrip(b'=').decode()}")  # signed with another key
        for token in forged:
            for method in ("GET", "POST"):
                res = await client.request(method, app.url_path_for("users:unsubscribe"), params={"token": token})
                assert (res.status_code, res.json()) == (400, INVALID_LINK), (method, token)
        # a login's access token: longer than any unsubscribe token
        access_token = await session_token(db, test_user)
        res = await client.post(app.url_path_for("users:unsubscribe"), params={"token": access_token})
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert await preferences(app, client_for(test_user)) == ALL_ON
        assert await preferences(app, client_for(test_user2)) == ALL_ON

        res = await client.post(app.url_path_for("users:unsubscribe"), params={"token": mine})
        assert res.status_code == 200
        assert await preferences(app, client_for(test_user)) == {**ALL_ON, "offer_rejected": False}
        assert await preferences(app, client_for(test_user2)) == ALL_ON

    @pytest.mark.parametrize("params", ({}, {"token": ""}, {"token": "x" * 129}))
    async def test_a_missing_or_absurd_token_is_a_422(
        self, app: FastAPI, client: AsyncClient, params: dict[str, str]
    ) -> None:
        for method in ("GET", "POST"):
            res = await client.request(method, app.url_path_for("users:unsubscribe"), params=params)
            assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT

    async def test_an_unsubscribe_token_opens_nothing_else(
        self, app: FastAPI, client: AsyncClient, test_user: UserPublic
    ) -> None:
        token = unsubscribe_token(user_id=test_user.id, kind=NotificationKind.offer_received)
        res = await client.get(app.url_path_for("users:get-current-user"), headers=bearer(token))
        assert res.status_code == status.HTTP_401_UNAUTHORIZED

    async def test_the_link_of_a_deleted_account_is_refused(
        self, app: FastAPI, client: AsyncClient, client_for: Clients, db: Database
    ) -> None:
        leaver = await create_user(db, email="leaver@example.com", username="leaver", password="a long password")
        token = unsubscribe_token(user_id=leaver.id, kind=NotificationKind.offer_received)
        res = await client_for(leaver).request(
            "DELETE",
            app.url_path_for("users:delete-current-user"),
            json={"account_deletion": {"password": "a long password"}},
        )
        assert res.status_code == 200, res.text
        res = await client.post(app.url_path_for("users:unsubscribe"), params={"token": token})
        assert (res.status_code, res.json()) == (400, INVALID_LINK)


# --- the same transaction as the change --------------------------------------------------------


class TestWrittenWithTheChange:
    @pytest.mark.parametrize("attempt", range(6))
    async def test_an_accept_that_loses_a_race_with_a_rescind_sends_nothing(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
        mailbox: Mailbox,
        attempt: int,
    ) -> None:
        cleaning = test_cleaning_with_offers
        accepted, rescinded = await asyncio.gather(
            accept(app, client_for(test_user2), cleaning.id, test_user3.username),
            rescind(app, client_for(test_user3), cleaning.id),
        )
        await settled(db)
        decisions = await db.fetch_all(
            "SELECT kind, recipient FROM outbox_messages WHERE kind IN ('offer_accepted', 'offer_rejected')"
        )
        if accepted.status_code == 200:
            assert rescinded.status_code == 400
            await wait_for_kind(mailbox, test_user3.email, "offer_accepted")
            await wait_for_kind(mailbox, test_user4.email, "offer_rejected")
            assert len(decisions) == 4  # the accepted cleaner and the three others
        else:
            assert (accepted.status_code, rescinded.status_code) == (404, 200)
            assert decisions == []  # the accept rolled back: not a word of it
            assert of_kind(mailbox, test_user3.email, "offer_accepted") == []
            assert of_kind(mailbox, test_user4.email, "offer_rejected") == []

    async def test_two_accepts_at_once_tell_one_acceptance(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user_list: list[UserPublic],
        test_cleaning_with_offers: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        owner_tabs = [client_for(test_user2) for _ in test_user_list]
        answers = await asyncio.gather(
            *(
                accept(app, tab, test_cleaning_with_offers.id, user.username)
                for tab, user in zip(owner_tabs, test_user_list, strict=True)
            )
        )
        [winner] = [user for user, answer in zip(test_user_list, answers, strict=True) if answer.status_code == 200]
        await wait_for_kind(mailbox, winner.email, "offer_accepted")
        await settled(db)
        for user in test_user_list:
            expected = ["offer_accepted"] if user is winner else ["offer_rejected"]
            await wait_for_kind(mailbox, user.email, expected[0])
            assert [kind_of(message) for message in offer_mail_to(mailbox, user.email)] == expected

    @pytest.mark.parametrize("attempt", range(3))
    async def test_an_owner_leaving_while_offers_change_never_deadlocks(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user6: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
        mailbox: Mailbox,
        attempt: int,
    ) -> None:
        """A change to offers writes its mail, which refers to its recipient's row, under the lock
        on the cleaning; the deletion of that recipient's account locks the cleaning first too."""
        owner = client_for(test_user2)
        other_id = await new_cleaning(owner, app, name="without an accepted offer")
        deletion = owner.request(
            "DELETE",
            app.url_path_for("users:delete-current-user"),
            json={"account_deletion": {"password": "tennistwins"}},
        )
        deleted, cancelled, offered = await asyncio.gather(
            deletion,
            cancel(app, client_for(test_user3), test_cleaning_with_accepted_offer.id),
            offer(app, client_for(test_user6), other_id),
        )
        assert deleted.status_code == status.HTTP_200_OK, deleted.text
        assert cancelled.status_code in (200, 404), cancelled.text
        assert offered.status_code in (201, 404), offered.text
        await settled(db)

    async def test_a_change_whose_mail_cannot_be_written_does_not_happen_and_sends_nothing(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        await settled(db)
        # The database refuses the rejections' mail for a moment: written after the acceptance's
        # mail, in the same transaction, it takes the acceptance and its mail with it.
        await db.execute(
            "ALTER TABLE outbox_messages ADD CONSTRAINT ck_test_no_rejection CHECK (kind <> 'offer_rejected') NOT VALID"
        )
        try:
            owner = client_for(test_user2)
            failing = AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://testserver",
                headers=owner.headers,
                auth=owner.auth,
            )
            async with failing:
                res = await accept(app, failing, test_cleaning_with_offers.id, test_user3.username)
                assert res.status_code == status.HTTP_500_INTERNAL_SERVER_ERROR
        finally:
            await db.execute("ALTER TABLE outbox_messages DROP CONSTRAINT ck_test_no_rejection")
        status_now = await db.fetch_val(
            "SELECT status FROM user_offers_for_cleanings WHERE cleaning_id = :c AND user_id = :u",
            {"c": test_cleaning_with_offers.id, "u": test_user3.id},
        )
        assert status_now == "pending"
        await asyncio.sleep(1.0)  # five of the sender's polls
        assert await outbox_rows(db, "offer_accepted") == []
        assert of_kind(mailbox, test_user3.email, "offer_accepted") == []

    async def test_a_committed_change_is_sent_though_the_mail_server_was_down_when_it_committed(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
        mailbox: Mailbox,
    ) -> None:
        mailbox.stop()
        try:
            assert (await cancel(app, client_for(test_user3), test_cleaning_with_accepted_offer.id)).status_code == 200
            await asyncio.sleep(0.5)  # the sender tries, and fails
        finally:
            mailbox.start()
        await wait_for_kind(mailbox, test_user2.email, "offer_cancelled")

    async def test_many_changes_at_once_each_committed_one_sends_its_mail_and_no_other(
        self, app: FastAPI, client_for: Clients, db: Database, test_user: UserPublic, mailbox: Mailbox
    ) -> None:
        """Six cleanings, each with two offers; at once on each, the owner accepts the first
        offer, and its maker backs out (cancel) or withdraws (rescind), in whichever order the
        database settles. Every mail sent is one of a change that committed, and every change
        that committed sent its mail."""
        owner = client_for(test_user)
        first, second = await cleaners(db, 2)
        cleaning_ids = [await new_cleaning(owner, app, name=f"job {i}") for i in range(6)]
        for cleaning_id in cleaning_ids:
            for user in (first, second):
                assert (await offer(app, client_for(user), cleaning_id)).status_code == 201
        await settled(db)

        async def race(cleaning_id: int, i: int) -> tuple[int, int]:
            backing_out = cancel if i % 2 else rescind
            accepted, backed = await asyncio.gather(
                accept(app, owner, cleaning_id, first.username), backing_out(app, client_for(first), cleaning_id)
            )
            return accepted.status_code, backed.status_code

        outcomes = await asyncio.gather(*(race(cleaning_id, i) for i, cleaning_id in enumerate(cleaning_ids)))
        expected: list[tuple[str, str, int]] = []
        for i, (cleaning_id, (accepted, backed)) in enumerate(zip(cleaning_ids, outcomes, strict=True)):
            if accepted == 200:
                expected += [
                    ("offer_accepted", first.email, cleaning_id),
                    ("offer_rejected", second.email, cleaning_id),
                ]
            if i % 2 and accepted == 200 and backed == 200:  # accepted, then cancelled
                expected.append(("offer_cancelled", test_user.email, cleaning_id))
        await settled(db)
        rows = await db.fetch_all(
            "SELECT kind, recipient, cleaning_id, outcome FROM outbox_messages"
            " WHERE kind IN ('offer_accepted', 'offer_rejected', 'offer_cancelled')"
        )
        assert sorted((row["kind"], row["recipient"], row["cleaning_id"]) for row in rows) == sorted(expected)
        assert {row["outcome"] for row in rows} <= {"sent"}
        sent = [
            message
            for address in (first.email, second.email, test_user.email)
            for message in offer_mail_to(mailbox, address)
            if kind_of(message) != "offer_received"
        ]
        assert len(sent) == len(expected)
