"""Leaving Phresh (DELETE /api/users/me/): what confirms it, and what becomes of everything the
account touched, so that nobody else's view of the marketplace breaks; the races of a deletion
with a login, an accept, a new offer and another deletion."""

import asyncio
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import asyncpg
import httpx
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient, Response

from app.core import config, metrics
from app.db.admin import libpq_url
from app.db.errors import AccountNotActiveError
from app.db.repositories.account import AccountRepository
from app.db.repositories.cleanings import CleaningsRepository
from app.db.repositories.offers import OffersRepository
from app.db.repositories.sessions import SessionsRepository
from app.db.repositories.users import UsersRepository
from app.models.cleaning import CleaningCreate, CleaningInDB
from app.models.evaluation import EvaluationCreate
from app.models.offer import OfferCreate
from app.models.user import UserInDB, deleted_email, deleted_username
from app.services import mfa
from scripts.live_server import live_server
from tests.conftest import (
    TEST_DATABASE_URL,
    AnyUser,
    Mailbox,
    bearer,
    create_cleaning_with_evaluated_offer_helper,
    create_user,
    eventually,
    log_in,
)

Clients = Callable[[AnyUser], AsyncClient]

PASSWORD = "a-long-enough-password"
WRONG_PASSWORD = {"detail": "The password is incorrect."}
NOT_ACTIVE = {"detail": "Not an active user."}
CODE_REQUIRED = {"detail": "Your second factor is on: send a code from your authenticator app, or a recovery code."}
WRONG_CODE = {"detail": "The code is incorrect."}


async def delete_account(app: FastAPI, client: AsyncClient, password: str = PASSWORD, **more: Any) -> Response:
    body = {"account_deletion": {"password": password, **more}}
    return await client.request("DELETE", app.url_path_for("users:delete-current-user"), json=body)


@pytest.fixture
async def leaver(db: Database) -> UserInDB:
    return await create_user(db, email="leaver@example.com", username="leaver", password=PASSWORD)


@pytest.fixture
async def cleaner(db: Database) -> UserInDB:
    return await create_user(db, email="cleaner@example.com", username="cleaner", password=PASSWORD)


@pytest.fixture
async def neighbour(db: Database) -> UserInDB:
    return await create_user(db, email="neighbour@example.com", username="neighbour", password=PASSWORD)


async def a_cleaning(db: Database, owner: AnyUser, name: str = "windows") -> CleaningInDB:
    new_cleaning = CleaningCreate(name=name, description="all of them", price=25.0, cleaning_type="spot_clean")
    return await CleaningsRepository(db).create_cleaning(new_cleaning=new_cleaning, requesting_user=owner)


async def offer(db: Database, cleaning: CleaningInDB, user: AnyUser) -> None:
    await OffersRepository(db).create_offer_for_cleaning(
        new_offer=OfferCreate(cleaning_id=cleaning.id, user_id=user.id)
    )


async def accept(db: Database, cleaning: CleaningInDB, user: AnyUser) -> None:
    repo = OffersRepository(db)
    found = await repo.get_offer_for_cleaning_from_user(cleaning=cleaning, user=user)
    assert found is not None
    await repo.accept_offer(offer=found)


async def statuses(db: Database, cleaning_id: int) -> dict[int, str]:
    rows = await db.fetch_all(
        "SELECT user_id, status FROM user_offers_for_cleanings WHERE cleaning_id = :id", {"id": cleaning_id}
    )
    return {row["user_id"]: row["status"] for row in rows}


async def cleaning_exists(db: Database, cleaning_id: int) -> bool:
    return bool(await db.fetch_val("SELECT count(*) FROM cleanings WHERE id = :id", {"id": cleaning_id}))


def sessions_ended_for_deletions() -> float:
    """phresh_sessions_ended_total{reason="account_deleted"} in this process (the tests' app)."""
    return metrics.REGISTRY.get_sample_value("phresh_sessions_ended_total", {"reason": "account_deleted"}) or 0.0


def evaluation(rating: int) -> EvaluationCreate:
    return EvaluationCreate(overall_rating=rating, professionalism=rating, headline="done", comment="well done")


class TestConfirmingTheDeletion:
    async def test_the_right_password_deletes_the_account_and_says_what_became_of_its_things(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        res = await delete_account(app, client_for(leaver))
        assert res.status_code == status.HTTP_200_OK
        assert res.json() == {
            "cleanings_deleted": 0,
            "cleanings_kept": 0,
            "offers_withdrawn": 0,
            "offers_backed_out": 0,
            "offers_kept": 0,
            "evaluations_received_deleted": 0,
            "sessions_ended": 1,
        }
        row = await db.fetch_one(
            "SELECT username, email, is_active, deleted_at FROM users WHERE id = :id", {"id": leaver.id}
        )
        assert row is not None
        assert (row["username"], row["email"], row["is_active"]) == (
            deleted_username(leaver.id),
            deleted_email(leaver.id),
            False,
        )
        assert row["deleted_at"] is not None

    async def test_a_wrong_password_deletes_nothing(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        client = client_for(leaver)
        res = await delete_account(app, client, password="not-my-password")
        assert (res.status_code, res.json()) == (status.HTTP_400_BAD_REQUEST, WRONG_PASSWORD)
        assert (await client.get(app.url_path_for("users:get-current-user"))).status_code == status.HTTP_200_OK
        assert await db.fetch_val("SELECT deleted_at FROM users WHERE id = :id", {"id": leaver.id}) is None

    async def test_wrong_passwords_are_limited_as_failed_logins_are(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        client = client_for(leaver)
        for _ in range(config.LOGIN_MAX_FAILURES_PER_ACCOUNT):
            assert (await delete_account(app, client, password="guess-again")).status_code == 400
        res = await delete_account(app, client, password="guess-again")
        assert res.status_code == status.HTTP_429_TOO_MANY_REQUESTS
        assert int(res.headers["Retry-After"]) > 0
        # even the right password waits out the lock: guessing on cannot tell it apart
        assert (await delete_account(app, client)).status_code == status.HTTP_429_TOO_MANY_REQUESTS
        assert await db.fetch_val("SELECT deleted_at FROM users WHERE id = :id", {"id": leaver.id}) is None

    async def test_without_a_login_nothing_is_deleted(
        self, app: FastAPI, client: AsyncClient, leaver: UserInDB
    ) -> None:
        res = await delete_account(app, client)
        assert res.status_code == status.HTTP_401_UNAUTHORIZED

    @pytest.mark.parametrize(
        "body",
        (
            None,
            {},
            {"account_deletion": {}},
            {"account_deletion": {"password": None}},
            {"account_deletion": {"password": "x" * 101}},
            {"account_deletion": {"password": PASSWORD, "code": "1" * 65}},
            {"account_deletion": {"password": "\u0000"}},
            {"password": PASSWORD},
        ),
    )
    async def test_a_malformed_confirmation_is_a_422(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB, body: Any
    ) -> None:
        res = await client_for(leaver).request("DELETE", app.url_path_for("users:delete-current-user"), json=body)
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert await db.fetch_val("SELECT deleted_at FROM users WHERE id = :id", {"id": leaver.id}) is None


async def second_factor_for(db: Database, user: AnyUser) -> tuple[bytes, list[str]]:
    """The user's second factor, turned on with a real code: its secret and recovery codes."""
    enrolment = await mfa.start_enrolment(db, user_id=user.id)
    assert enrolment is not None
    outcome, recovery_codes, _ = await mfa.confirm_enrolment(
        db, user_id=user.id, code=mfa.totp(enrolment.secret, time.time())
    )
    assert outcome is mfa.EnrolmentOutcome.enabled
    return enrolment.secret, recovery_codes


class TestWithTheSecondFactorOn:
    async def test_a_code_is_required_too(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        secret, _ = await second_factor_for(db, leaver)
        client = client_for(leaver)
        res = await delete_account(app, client)
        assert (res.status_code, res.json()) == (status.HTTP_400_BAD_REQUEST, CODE_REQUIRED)
        # the password is checked first, whatever the code
        next_code = mfa.totp(secret, time.time() + mfa.TOTP_PERIOD_SECONDS)
        res = await delete_account(app, client, password="not-my-password", code=next_code)
        assert (res.status_code, res.json()) == (status.HTTP_400_BAD_REQUEST, WRONG_PASSWORD)
        wrong = "000000" if next_code != "000000" else "111111"
        res = await delete_account(app, client, code=wrong)
        assert (res.status_code, res.json()) == (status.HTTP_400_BAD_REQUEST, WRONG_CODE)
        assert await db.fetch_val("SELECT deleted_at FROM users WHERE id = :id", {"id": leaver.id}) is None

        res = await delete_account(app, client, code=next_code)
        assert res.status_code == status.HTTP_200_OK
        for table in ("second_factors", "recovery_codes", "mfa_challenges"):
            assert await db.fetch_val(f"SELECT count(*) FROM {table} WHERE user_id = :id", {"id": leaver.id}) == 0  # noqa: S608

    async def test_a_recovery_code_does_too(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        _, recovery_codes = await second_factor_for(db, leaver)
        res = await delete_account(app, client_for(leaver), code=recovery_codes[3])
        assert res.status_code == status.HTTP_200_OK

    async def test_wrong_codes_are_limited_as_failed_logins_are(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        secret, _ = await second_factor_for(db, leaver)
        client = client_for(leaver)
        right = mfa.totp(secret, time.time() + mfa.TOTP_PERIOD_SECONDS)
        wrong = "000000" if right != "000000" else "111111"
        for _ in range(config.MFA_MAX_FAILURES_PER_ACCOUNT):
            assert (await delete_account(app, client, code=wrong)).json() == WRONG_CODE
        res = await delete_account(app, client, code=right)
        assert res.status_code == status.HTTP_429_TOO_MANY_REQUESTS
        assert int(res.headers["Retry-After"]) > 0
        assert await db.fetch_val("SELECT deleted_at FROM users WHERE id = :id", {"id": leaver.id}) is None


class TestSessionsAndTokensEndAtOnce:
    async def test_every_session_and_token_is_refused_and_no_login_works(
        self, app: FastAPI, client: AsyncClient, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        logins = [(await log_in(app, client, "leaver@example.com", PASSWORD)).json() for _ in range(2)]
        other_tab = client_for(leaver)
        me = app.url_path_for("users:get-current-user")
        assert (await other_tab.get(me)).status_code == status.HTTP_200_OK
        counted = sessions_ended_for_deletions()
        res = await delete_account(app, client_for(leaver))
        assert (res.status_code, res.json()["sessions_ended"]) == (status.HTTP_200_OK, 4)
        assert sessions_ended_for_deletions() == counted + 4  # the two logins, the other tab, this one

        assert (await other_tab.get(me)).status_code == status.HTTP_401_UNAUTHORIZED
        for tokens in logins:
            assert (await client.get(me, headers=bearer(tokens["access_token"]))).status_code == 401
            res = await client.post(
                app.url_path_for("users:refresh-access-token"), json={"refresh_token": tokens["refresh_token"]}
            )
            assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert await db.fetch_val("SELECT count(*) FROM sessions WHERE user_id = :id", {"id": leaver.id}) == 0
        for login in ("leaver@example.com", "leaver", deleted_username(leaver.id), deleted_email(leaver.id)):
            assert (await log_in(app, client, login, PASSWORD)).status_code == status.HTTP_401_UNAUTHORIZED
        # the tombstone's password matches nothing, not even what is stored as it
        assert (await log_in(app, client, deleted_username(leaver.id), "!deleted")).status_code == 401

    async def test_a_second_deletion_at_once_finds_the_account_gone(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        answers = await asyncio.gather(*(delete_account(app, client_for(leaver)) for _ in range(3)))
        assert sorted(res.status_code for res in answers) == [200, 401, 401]
        assert (
            await db.fetch_val(
                "SELECT count(*) FROM security_events WHERE user_id = :id AND kind = 'account_deleted'",
                {"id": leaver.id},
            )
            == 1
        )


class TestNamesAndProfile:
    async def test_the_email_and_username_can_be_registered_again_by_someone_new(
        self, app: FastAPI, client: AsyncClient, client_for: Clients, leaver: UserInDB
    ) -> None:
        assert (await delete_account(app, client_for(leaver))).status_code == status.HTTP_200_OK
        new_user = {"email": "Leaver@example.com", "username": "LEAVER", "password": "another-password"}
        res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
        assert res.status_code == status.HTTP_201_CREATED
        assert res.json()["id"] != leaver.id
        assert (await log_in(app, client, "leaver@example.com", "another-password")).status_code == 200

    async def test_a_deleted_users_names_cannot_be_registered_or_taken(
        self, app: FastAPI, client: AsyncClient, client_for: Clients, leaver: UserInDB, neighbour: UserInDB
    ) -> None:
        assert (await delete_account(app, client_for(leaver))).status_code == status.HTTP_200_OK
        for new_user in (
            {"email": "x@example.com", "username": deleted_username(leaver.id), "password": PASSWORD},
            {"email": deleted_email(leaver.id), "username": "someone", "password": PASSWORD},
        ):
            res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
            assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        res = await client_for(neighbour).put(
            app.url_path_for("users:update-current-user"), json={"user_update": {"username": deleted_username(99)}}
        )
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT

    async def test_the_profile_goes(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB, neighbour: UserInDB
    ) -> None:
        client = client_for(leaver)
        profile = {"full_name": "Lee Ver", "phone_number": "555-0100", "bio": "moving abroad"}
        assert (
            await client.put(app.url_path_for("profiles:update-own-profile"), json={"profile_update": profile})
        ).status_code == 200
        assert (await delete_account(app, client)).status_code == status.HTTP_200_OK
        assert await db.fetch_val("SELECT count(*) FROM profiles WHERE user_id = :id", {"id": leaver.id}) == 0
        res = await client_for(neighbour).get(app.url_path_for("profiles:get-profile-by-username", username="leaver"))
        assert res.status_code == status.HTTP_404_NOT_FOUND


class TestCleaningsAndOffers:
    async def test_cleanings_without_an_accepted_offer_go_with_their_offers(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB, cleaner: UserInDB
    ) -> None:
        untouched = await a_cleaning(db, leaver, "untouched")
        wanted = await a_cleaning(db, leaver, "wanted")
        await offer(db, wanted, cleaner)
        res = await delete_account(app, client_for(leaver))
        assert res.json()["cleanings_deleted"] == 2
        for cleaning in (untouched, wanted):
            assert not await cleaning_exists(db, cleaning.id)
            path = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=cleaning.id)
            assert (await client_for(cleaner).get(path)).status_code == status.HTTP_404_NOT_FOUND
        assert (
            await db.fetch_val("SELECT count(*) FROM user_offers_for_cleanings WHERE user_id = :id", {"id": cleaner.id})
            == 0
        )

    async def test_a_cleaning_with_an_accepted_offer_stays_for_its_cleaner_owned_by_a_deleted_user(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        leaver: UserInDB,
        cleaner: UserInDB,
        neighbour: UserInDB,
    ) -> None:
        agreed = await a_cleaning(db, leaver, "agreed")
        await offer(db, agreed, cleaner)
        await offer(db, agreed, neighbour)
        await accept(db, agreed, cleaner)
        res = await delete_account(app, client_for(leaver))
        assert (res.json()["cleanings_deleted"], res.json()["cleanings_kept"]) == (0, 1)

        path = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=agreed.id)
        shown = await client_for(cleaner).get(path)
        assert shown.status_code == status.HTTP_200_OK
        owner = shown.json()["owner"]
        assert owner["id"] == leaver.id
        assert (owner["username"], owner["email"], owner["is_active"], owner["profile"]) == (
            deleted_username(leaver.id),
            deleted_email(leaver.id),
            False,
            None,
        )
        assert "leaver" not in shown.text
        assert await statuses(db, agreed.id) == {cleaner.id: "accepted", neighbour.id: "rejected"}

    async def test_nobody_can_offer_on_a_kept_cleaning_once_its_owner_has_left(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        leaver: UserInDB,
        cleaner: UserInDB,
        neighbour: UserInDB,
    ) -> None:
        # An offer nobody could ever accept would wait as pending for good: it is refused, with why.
        agreed = await a_cleaning(db, leaver, "agreed")
        await offer(db, agreed, cleaner)
        await accept(db, agreed, cleaner)
        path = app.url_path_for("offers:create-offer", cleaning_id=agreed.id)
        assert (await delete_account(app, client_for(leaver))).status_code == status.HTTP_200_OK
        res = await client_for(neighbour).post(path)
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": "The owner of this cleaning has left Phresh: nobody can accept an offer on it."}
        assert await statuses(db, agreed.id) == {cleaner.id: "accepted"}

    async def test_the_feed_shows_kept_cleanings_with_the_deleted_owner(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB, cleaner: UserInDB
    ) -> None:
        agreed = await a_cleaning(db, leaver, "agreed")
        await offer(db, agreed, cleaner)
        await accept(db, agreed, cleaner)
        await a_cleaning(db, leaver, "open")
        assert (await delete_account(app, client_for(leaver))).status_code == status.HTTP_200_OK
        res = await client_for(cleaner).get(app.url_path_for("feed:get-cleaning-feed-for-user"))
        assert res.status_code == status.HTTP_200_OK
        items = res.json()
        assert [item["id"] for item in items] == [agreed.id]
        assert items[0]["owner"]["username"] == deleted_username(leaver.id)
        assert items[0]["owner"]["profile"] is None

    async def test_pending_offers_are_withdrawn_and_an_accepted_one_is_cancelled(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        leaver: UserInDB,
        cleaner: UserInDB,
        neighbour: UserInDB,
    ) -> None:
        pending = await a_cleaning(db, neighbour, "pending")
        await offer(db, pending, leaver)
        agreed = await a_cleaning(db, neighbour, "agreed")
        await offer(db, agreed, leaver)
        await offer(db, agreed, cleaner)
        await accept(db, agreed, leaver)
        assert await statuses(db, agreed.id) == {leaver.id: "accepted", cleaner.id: "rejected"}

        res = await delete_account(app, client_for(leaver))
        assert (res.json()["offers_withdrawn"], res.json()["offers_backed_out"], res.json()["offers_kept"]) == (1, 1, 1)
        assert await statuses(db, pending.id) == {}
        # as when a cleaner backs out: the other offers are pending again, for the owner to choose
        assert await statuses(db, agreed.id) == {leaver.id: "cancelled", cleaner.id: "pending"}
        offers = await client_for(neighbour).get(
            app.url_path_for("offers:list-offers-for-cleaning", cleaning_id=agreed.id)
        )
        assert offers.status_code == status.HTTP_200_OK
        by_user = {item["user_id"]: item for item in offers.json()}
        assert by_user[leaver.id]["user"]["username"] == deleted_username(leaver.id)
        accepted = await client_for(neighbour).put(
            app.url_path_for("offers:accept-offer-from-user", cleaning_id=agreed.id, username=cleaner.username)
        )
        assert accepted.status_code == status.HTTP_200_OK

    async def test_the_evaluations_written_stay_so_the_cleaners_statistics_do_not_change(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB, cleaner: UserInDB
    ) -> None:
        for rating in (5, 2):
            await create_cleaning_with_evaluated_offer_helper(
                db, leaver, cleaner, CleaningCreate(name=f"job {rating}", price=10.0), evaluation(rating)
            )
        stats_path = app.url_path_for("evaluations:get-stats-for-cleaner", username=cleaner.username)
        list_path = app.url_path_for("evaluations:list-evaluations-for-cleaner", username=cleaner.username)
        viewer = client_for(cleaner)
        stats_before, list_before = (await viewer.get(stats_path)).json(), (await viewer.get(list_path)).json()

        res = await delete_account(app, client_for(leaver))
        assert (res.json()["cleanings_kept"], res.json()["cleanings_deleted"]) == (2, 0)
        assert (await viewer.get(stats_path)).json() == stats_before
        assert stats_before["total_evaluations"] == 2
        assert (await viewer.get(list_path)).json() == list_before

    async def test_the_evaluations_received_go_with_the_statistics_as_a_cleaner(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB, neighbour: UserInDB
    ) -> None:
        job = await create_cleaning_with_evaluated_offer_helper(
            db, neighbour, leaver, CleaningCreate(name="job", price=10.0), evaluation(4)
        )
        res = await delete_account(app, client_for(leaver))
        assert (res.json()["evaluations_received_deleted"], res.json()["offers_kept"]) == (1, 1)
        assert (
            await db.fetch_val(
                "SELECT count(*) FROM cleaning_to_cleaner_evaluations WHERE cleaner_id = :id", {"id": leaver.id}
            )
            == 0
        )
        # the owner's cleaning keeps its completed offer, made by a deleted user; the owner's own
        # page of offers still answers
        assert await statuses(db, job.id) == {leaver.id: "completed"}
        path = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=job.id)
        assert (await client_for(neighbour).get(path)).status_code == status.HTTP_200_OK
        offers = await client_for(neighbour).get(
            app.url_path_for("offers:list-offers-for-cleaning", cleaning_id=job.id)
        )
        assert [item["user"]["username"] for item in offers.json()] == [deleted_username(leaver.id)]
        # the deleted cleaner cannot be named in a path: their names are no usernames
        stats = app.url_path_for("evaluations:get-stats-for-cleaner", username=deleted_username(leaver.id))
        assert (await client_for(neighbour).get(stats)).status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        stats = app.url_path_for("evaluations:get-stats-for-cleaner", username="leaver")
        assert (await client_for(neighbour).get(stats)).status_code == status.HTTP_404_NOT_FOUND


class TestWhatOthersAndSuperusersSee:
    async def test_the_users_list_skips_a_deleted_account_and_it_cannot_be_brought_back(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        leaver: UserInDB,
        test_superuser: UserInDB,
    ) -> None:
        assert (await delete_account(app, client_for(leaver))).status_code == status.HTTP_200_OK
        admin = client_for(test_superuser)
        page = (await admin.get(app.url_path_for("users:list-users"))).json()
        assert leaver.id not in [user["id"] for user in page["users"]]
        assert page["total"] == len(page["users"]) == 1
        for name in ("users:reactivate-user", "users:deactivate-user"):
            res = await admin.post(app.url_path_for(name, user_id=str(leaver.id)))
            assert res.status_code == status.HTTP_404_NOT_FOUND
        assert await UsersRepository(db).make_superuser(id=leaver.id) is None
        assert (
            await db.fetch_val("SELECT is_active OR is_superuser FROM users WHERE id = :id", {"id": leaver.id}) is False
        )

    async def test_the_database_refuses_to_revive_a_deleted_account(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        assert (await delete_account(app, client_for(leaver))).status_code == status.HTTP_200_OK
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute("UPDATE users SET is_active = true WHERE id = :id", {"id": leaver.id})


class TestTheAuditTrail:
    async def test_the_deletion_is_kept_by_user_id_with_no_personal_data(
        self, app: FastAPI, client: AsyncClient, client_for: Clients, db: Database, leaver: UserInDB
    ) -> None:
        assert (await log_in(app, client, "leaver@example.com", PASSWORD)).status_code == 200
        assert (await client_for(leaver).post(app.url_path_for("users:send-verification-email"))).status_code == 202
        assert (await delete_account(app, client_for(leaver))).status_code == status.HTTP_200_OK

        rows = await db.fetch_all(
            "SELECT kind, client_address, detail, request_id FROM security_events WHERE user_id = :id ORDER BY id",
            {"id": leaver.id},
        )
        assert [row["kind"] for row in rows] == ["login_success", "email_verification_requested", "account_deleted"]
        deletion = rows[-1]
        assert deletion["client_address"] is None and deletion["request_id"]
        assert deletion["detail"].startswith("cleanings_deleted 0, cleanings_kept 0")
        assert all(row["client_address"] is None for row in rows)
        assert all(row["detail"] is None for row in rows[:-1])
        # nothing Phresh keeps names the account any more but the notice of its deletion
        for table, column in (("security_events", "detail"), ("security_events", "client_address"), ("users", "email")):
            found = await db.fetch_val(
                f"SELECT count(*) FROM {table} WHERE {column} ILIKE '%leaver%'"  # noqa: S608 - the test's own names
            )
            assert found == 0, table
        mail = await db.fetch_all("SELECT kind, recipient, user_id FROM outbox_messages ORDER BY id")
        assert [(row["kind"], row["recipient"]) for row in mail if row["user_id"] == leaver.id] == [
            ("email_verification", deleted_email(leaver.id)),
            ("email_verification", deleted_email(leaver.id)),
        ]


class TestTheNotice:
    async def test_a_notice_goes_to_the_address_the_account_had(
        self, app: FastAPI, client_for: Clients, mailbox: Mailbox, leaver: UserInDB
    ) -> None:
        assert (await delete_account(app, client_for(leaver))).status_code == status.HTTP_200_OK

        def notices() -> list[EmailMessage]:
            return [m for m in mailbox.to("leaver@example.com") if m["X-Phresh-Kind"] == "account_deleted"]

        async def arrived() -> bool:
            return bool(notices())

        await eventually(arrived, "the notice of the deletion")
        notice = notices()
        assert len(notice) == 1
        assert notice[0]["Subject"] == "Your Phresh account was deleted"
        body = notice[0].get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert "token=" not in text and "/verify" not in text and "/password-reset" not in text


# --- Races: each settles in the database -------------------------------------------------------


class TestRaces:
    async def test_a_login_whose_password_was_checked_before_the_deletion_gets_no_session(
        self, db: Database, leaver: UserInDB
    ) -> None:
        # The login's steps and the deletion interleaved by hand: the password is right, then the
        # account goes, then the login would start its session.
        user, verified = await UsersRepository(db).check_credentials(login="leaver@example.com", password=PASSWORD)
        assert user is not None and verified
        await AccountRepository(db).delete_account(user_id=leaver.id)
        with pytest.raises(AccountNotActiveError):
            await SessionsRepository(db).start_session(user_id=user.id, client_address="1.2.3.4", user_agent="x")
        assert await db.fetch_val("SELECT count(*) FROM sessions WHERE user_id = :id", {"id": leaver.id}) == 0

    def test_a_deletion_racing_logins_on_two_workers_leaves_no_session_and_no_working_token(self) -> None:
        with live_server(TEST_DATABASE_URL, workers=2) as base_url:
            for round_ in range(6):
                email = f"racer{round_}@example.com"
                registered = httpx.post(
                    f"{base_url}/api/users/",
                    json={"new_user": {"email": email, "username": f"racer{round_}", "password": PASSWORD}},
                )
                assert registered.status_code == 201
                token = registered.json()["access_token"]["access_token"]
                logins, deletion = logins_racing_a_deletion(base_url, email=email, token=token, logins=2)
                assert deletion.status_code == 200
                for login in logins:
                    assert login.status_code in (200, 401), login.text
                    if login.status_code == 200:  # came first: its session ended with the account
                        tokens = login.json()
                        me = httpx.get(f"{base_url}/api/users/me/", headers=bearer(tokens["access_token"]))
                        assert me.status_code == 401
                        refreshed = httpx.post(
                            f"{base_url}/api/users/login/token/refresh/",
                            json={"refresh_token": tokens["refresh_token"]},
                        )
                        assert refreshed.status_code == 401
                left = asyncio.run(count_sessions(registered.json()["id"]))
                assert left == 0, f"round {round_}: {left} sessions of the deleted account"

    async def test_a_deletion_racing_an_accept_of_the_leavers_offer(
        self, app: FastAPI, client_for: Clients, db: Database, leaver: UserInDB, cleaner: UserInDB, neighbour: UserInDB
    ) -> None:
        for round_ in range(4):
            if round_:
                leaver = await create_user(
                    db, email=f"leaver{round_}@example.com", username=f"leaver{round_}", password=PASSWORD
                )
            job = await a_cleaning(db, neighbour, f"job {round_}")
            await offer(db, job, leaver)
            await offer(db, job, cleaner)
            accept_path = app.url_path_for(
                "offers:accept-offer-from-user", cleaning_id=job.id, username=leaver.username
            )
            accepted, deleted = await asyncio.gather(
                client_for(neighbour).put(accept_path), delete_account(app, client_for(leaver))
            )
            assert deleted.status_code == status.HTTP_200_OK
            assert accepted.status_code in (200, 404), accepted.text
            # whichever came first, the owner is left free to choose the other cleaner
            final = await statuses(db, job.id)
            assert final[cleaner.id] == "pending"
            assert final.get(leaver.id) in (None, "cancelled")
            assert (final.get(leaver.id) == "cancelled") == (accepted.status_code == 200)

    async def test_a_deletion_racing_an_offer_on_the_leavers_cleaning(
        self, app: FastAPI, client_for: Clients, db: Database, cleaner: UserInDB
    ) -> None:
        for round_ in range(4):
            leaver = await create_user(
                db, email=f"owner{round_}@example.com", username=f"owner{round_}", password=PASSWORD
            )
            job = await a_cleaning(db, leaver, f"job {round_}")
            offered, deleted = await asyncio.gather(
                client_for(cleaner).post(app.url_path_for("offers:create-offer", cleaning_id=job.id)),
                delete_account(app, client_for(leaver)),
            )
            assert deleted.status_code == status.HTTP_200_OK
            assert offered.status_code in (201, 404), offered.text
            assert not await cleaning_exists(db, job.id)
            assert await statuses(db, job.id) == {}

    async def test_a_deletion_racing_the_leavers_own_accept_on_their_cleaning(
        self, app: FastAPI, client_for: Clients, db: Database, cleaner: UserInDB
    ) -> None:
        for round_ in range(4):
            leaver = await create_user(
                db, email=f"owner{round_}@example.com", username=f"owner{round_}", password=PASSWORD
            )
            job = await a_cleaning(db, leaver, f"job {round_}")
            await offer(db, job, cleaner)
            accept_path = app.url_path_for(
                "offers:accept-offer-from-user", cleaning_id=job.id, username=cleaner.username
            )
            accepted, deleted = await asyncio.gather(
                client_for(leaver).put(accept_path), delete_account(app, client_for(leaver))
            )
            assert deleted.status_code == status.HTTP_200_OK
            assert accepted.status_code in (200, 401, 404), accepted.text
            # accepted first: the job stays for its cleaner; deleted first: it is gone, offer and all
            if await cleaning_exists(db, job.id):
                assert accepted.status_code == 200
                assert await statuses(db, job.id) == {cleaner.id: "accepted"}
                assert deleted.json()["cleanings_kept"] == 1
            else:
                assert accepted.status_code != 200
                assert deleted.json()["cleanings_deleted"] == 1


async def count_sessions(user_id: int) -> int:
    """Sessions of a user, read on a connection of this call's own (outside the tests' event loop)."""
    conn = await asyncpg.connect(libpq_url(TEST_DATABASE_URL))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", user_id))
    finally:
        await conn.close()


def logins_racing_a_deletion(
    base_url: str, *, email: str, token: str, logins: int
) -> tuple[list[httpx.Response], httpx.Response]:
    """`logins` logins with the account's password and its deletion, sent at once from threads of
    their own: the logins' answers and the deletion's."""
    start = threading.Barrier(logins + 1)
    answers: list[httpx.Response] = []
    deletion: list[httpx.Response] = []

    def log_in_now() -> None:
        start.wait()
        answers.append(httpx.post(f"{base_url}/api/users/login/token/", data={"username": email, "password": PASSWORD}))

    def delete_now() -> None:
        start.wait()
        deletion.append(
            httpx.request(
                "DELETE",
                f"{base_url}/api/users/me/",
                json={"account_deletion": {"password": PASSWORD}},
                headers=bearer(token),
            )
        )

    threads = [threading.Thread(target=log_in_now) for _ in range(logins)] + [threading.Thread(target=delete_now)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, deletion[0]
