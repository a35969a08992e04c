"""Taking your data (GET /api/users/me/export/): everything Phresh holds about the caller, as one
JSON document, and nothing that would let anyone act as them (no hash, salt, secret or token)."""

import base64
import json
import re
import time
from collections.abc import Callable

import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient

from app.db.repositories.cleanings import CleaningsRepository
from app.db.repositories.offers import OffersRepository
from app.models.cleaning import CleaningCreate
from app.models.evaluation import EvaluationCreate
from app.models.export import AccountExport
from app.models.offer import OfferCreate
from app.models.user import UserInDB
from app.services import mfa
from tests.conftest import (
    AnyUser,
    Mailbox,
    create_cleaning_with_evaluated_offer_helper,
    create_user,
    eventually,
    log_in,
)

Clients = Callable[[AnyUser], AsyncClient]

PASSWORD = "a-long-enough-password"


@pytest.fixture
async def me(db: Database) -> UserInDB:
    return await create_user(db, email="me@example.com", username="itsme", password=PASSWORD)


@pytest.fixture
async def cleaner(db: Database) -> UserInDB:
    return await create_user(db, email="cleaner@example.com", username="cleaner", password=PASSWORD)


@pytest.fixture
async def neighbour(db: Database) -> UserInDB:
    return await create_user(db, email="neighbour@example.com", username="neighbour", password=PASSWORD)


async def export(app: FastAPI, client: AsyncClient) -> AccountExport:
    res = await client.get(app.url_path_for("users:export-current-user"))
    assert res.status_code == status.HTTP_200_OK
    return AccountExport.model_validate_json(res.content)


class TestTheExport:
    async def test_it_holds_the_account_profile_cleanings_offers_evaluations_sessions_events_and_mail(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Clients,
        db: Database,
        me: UserInDB,
        cleaner: UserInDB,
        neighbour: UserInDB,
    ) -> None:
        mine = client_for(me)
        profile = {"full_name": "It's Me", "phone_number": "555-0100", "bio": "I post cleanings and clean"}
        assert (
            await mine.put(app.url_path_for("profiles:update-own-profile"), json={"profile_update": profile})
        ).status_code == 200
        assert (await log_in(app, client, "me@example.com", PASSWORD)).status_code == 200
        cleanings = CleaningsRepository(db)
        windows = await cleanings.create_cleaning(
            new_cleaning=CleaningCreate(name="windows", price=12.5), requesting_user=me
        )
        offers = OffersRepository(db)
        await offers.create_offer_for_cleaning(new_offer=OfferCreate(cleaning_id=windows.id, user_id=cleaner.id))
        theirs = await cleanings.create_cleaning(
            new_cleaning=CleaningCreate(name="garage", price=40), requesting_user=neighbour
        )
        await offers.create_offer_for_cleaning(new_offer=OfferCreate(cleaning_id=theirs.id, user_id=me.id))
        await create_cleaning_with_evaluated_offer_helper(
            db,
            me,
            cleaner,
            CleaningCreate(name="kitchen", price=30),
            EvaluationCreate(overall_rating=5, headline="spotless"),
        )
        await create_cleaning_with_evaluated_offer_helper(
            db,
            neighbour,
            me,
            CleaningCreate(name="attic", price=20),
            EvaluationCreate(overall_rating=3, comment="dusty"),
        )

        data = await export(app, mine)

        assert data.format == "phresh-account-export/1"
        assert (data.account.id, data.account.username, data.account.email) == (me.id, "itsme", "me@example.com")
        assert data.profile is not None
        assert (data.profile.full_name, data.profile.phone_number, data.profile.bio) == (
            "It's Me",
            "555-0100",
            "I post cleanings and clean",
        )
        assert [c.name for c in data.cleanings] == ["windows", "kitchen"]
        assert {(o.cleaning_name, o.status) for o in data.offers_made} == {
            ("garage", "pending"),
            ("attic", "completed"),
        }
        assert {(o.cleaning_name, o.username, o.status) for o in data.offers_received} == {
            ("windows", "cleaner", "pending"),
            ("kitchen", "cleaner", "completed"),
        }
        assert [
            (e.cleaning_name, e.cleaner_username, e.overall_rating, e.headline) for e in data.evaluations_given
        ] == [("kitchen", "cleaner", 5, "spotless")]
        assert [(e.cleaning_name, e.overall_rating, e.comment) for e in data.evaluations_received] == [
            ("attic", 3, "dusty")
        ]
        # the session of the login, and that of the export's own client
        assert len(data.sessions) == 2
        assert {s.user_agent for s in data.sessions} >= {"pytest"}
        assert "login_success" in [event.kind for event in data.security_events]
        assert [(m.kind, m.recipient) for m in data.mail] == [
            ("email_verification", "me@example.com"),
            ("offer_received", "me@example.com"),  # the offer on windows (mail about offers, docs/api.md)
            ("offer_received", "me@example.com"),  # and the one on kitchen
            ("offer_accepted", "me@example.com"),  # my offer on attic
        ]
        assert data.second_factor.enabled is False

    async def test_it_holds_no_one_elses_account_or_contact(
        self, app: FastAPI, client_for: Clients, db: Database, me: UserInDB, cleaner: UserInDB, neighbour: UserInDB
    ) -> None:
        kitchen = await create_cleaning_with_evaluated_offer_helper(
            db, me, cleaner, CleaningCreate(name="kitchen", price=30), EvaluationCreate(overall_rating=5)
        )
        await OffersRepository(db).create_offer_for_cleaning(
            new_offer=OfferCreate(cleaning_id=kitchen.id, user_id=neighbour.id)
        )
        await CleaningsRepository(db).create_cleaning(
            new_cleaning=CleaningCreate(name="the neighbour's own", price=1), requesting_user=neighbour
        )
        res = await client_for(me).get(app.url_path_for("users:export-current-user"))
        # who made an offer on my cleaning, by the name its page shows me; never their address
        assert '"username":"cleaner"' in res.text and '"username":"neighbour"' in res.text
        assert "cleaner@example.com" not in res.text and "neighbour@example.com" not in res.text
        assert "the neighbour's own" not in res.text

    async def test_it_comes_as_a_json_file_to_keep(self, app: FastAPI, client_for: Clients, me: UserInDB) -> None:
        res = await client_for(me).get(app.url_path_for("users:export-current-user"))
        assert res.headers["content-type"] == "application/json"
        assert res.headers["content-disposition"] == f'attachment; filename="phresh-account-{me.id}.json"'

    async def test_each_export_is_audited_and_the_next_one_lists_it(
        self, app: FastAPI, client_for: Clients, db: Database, me: UserInDB
    ) -> None:
        first = await export(app, client_for(me))
        assert "account_exported" not in [event.kind for event in first.security_events]
        assert (
            await db.fetch_val(
                "SELECT count(*) FROM security_events WHERE user_id = :id AND kind = 'account_exported'", {"id": me.id}
            )
            == 1
        )
        second = await export(app, client_for(me))
        assert [event.kind for event in second.security_events].count("account_exported") == 1

    async def test_only_for_a_logged_in_user(self, app: FastAPI, client: AsyncClient, me: UserInDB) -> None:
        res = await client.get(app.url_path_for("users:export-current-user"))
        assert res.status_code == status.HTTP_401_UNAUTHORIZED

    async def test_a_deleted_account_has_nothing_to_export(
        self, app: FastAPI, client_for: Clients, me: UserInDB
    ) -> None:
        mine = client_for(me)
        assert (await mine.get(app.url_path_for("users:export-current-user"))).status_code == 200
        body = {"account_deletion": {"password": PASSWORD}}
        assert (
            await mine.request("DELETE", app.url_path_for("users:delete-current-user"), json=body)
        ).status_code == 200
        assert (await mine.get(app.url_path_for("users:export-current-user"))).status_code == 401


def spellings(value: str | bytes) -> list[str]:
    """A stored value as it could appear in a JSON document: as it is, in hex, in base64."""
    raw = value.encode() if isinstance(value, str) else value
    found = [value] if isinstance(value, str) else []
    found += [raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]
    return [spelling for spelling in found if len(spelling) >= 8]


class TestNoSecretsInTheExport:
    async def test_no_password_hash_salt_token_or_secret_is_in_it(
        self, app: FastAPI, client: AsyncClient, client_for: Clients, db: Database, me: UserInDB, mailbox: Mailbox
    ) -> None:
        logins = [(await log_in(app, client, "me@example.com", PASSWORD)).json() for _ in range(2)]
        refreshed = await client.post(
            app.url_path_for("users:refresh-access-token"), json={"refresh_token": logins[0]["refresh_token"]}
        )
        assert refreshed.status_code == 200
        enrolment = await mfa.start_enrolment(db, user_id=me.id)
        assert enrolment is not None
        outcome, recovery_codes, _ = await mfa.confirm_enrolment(
            db, user_id=me.id, code=mfa.totp(enrolment.secret, time.time())
        )
        assert outcome is mfa.EnrolmentOutcome.enabled
        reset = await client.post(app.url_path_for("users:request-password-reset"), json={"email": "me@example.com"})
        assert reset.status_code == 202

        async def mail_tokens_minted() -> bool:
            return bool(await db.fetch_val("SELECT count(*) FROM account_tokens WHERE user_id = :id", {"id": me.id}))

        await eventually(mail_tokens_minted, "the reset mail's token")

        res = await client_for(me).get(app.url_path_for("users:export-current-user"))
        assert res.status_code == status.HTTP_200_OK
        document = res.text
        data = AccountExport.model_validate_json(document)
        assert data.second_factor.enabled and data.second_factor.recovery_codes_left == 10

        stored = await db.fetch_one("SELECT password, salt FROM users WHERE id = :id", {"id": me.id})
        assert stored is not None
        secrets: list[str | bytes] = [stored["password"], stored["salt"], enrolment.secret, *recovery_codes]
        secrets += [mfa.secret_text(enrolment.secret)]
        for login in (*logins, refreshed.json()):
            secrets += [login["access_token"], login["refresh_token"]]
        for query in (
            "SELECT t.token_hash FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE s.user_id = :id",
            "SELECT t.successor_sealed FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id"
            " WHERE s.user_id = :id AND t.successor_sealed IS NOT NULL",
            "SELECT token_hash FROM account_tokens WHERE user_id = :id",
            "SELECT secret_sealed FROM second_factors WHERE user_id = :id",
            "SELECT code_hash FROM recovery_codes WHERE user_id = :id",
        ):
            rows = await db.fetch_all(query, {"id": me.id})
            assert rows, query
            secrets += [bytes(row[0]) for row in rows]
        assert len(secrets) > 20
        for secret in secrets:
            for spelling in spellings(secret):
                assert spelling not in document, f"a stored secret is in the export: {spelling[:12]}..."
        # and no field is named for one
        keys = field_names(json.loads(document))
        assert not {key for key in keys if re.search("password|salt|hash|secret|token|code", key)} - {
            "recovery_codes_left"
        }
        # the reset mail asked for the address is there, without its link
        assert [m.kind for m in data.mail] == ["email_verification", "password_reset"]


def field_names(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {name for item in value.values() for name in field_names(item)}
    if isinstance(value, list):
        return {name for item in value for name in field_names(item)}
    return set()
