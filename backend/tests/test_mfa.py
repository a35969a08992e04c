"""Two-factor sign-in (TOTP, RFC 6238): enrolment, the login's second step, replays, limits,
recovery codes, turning it off, a superuser's reset, and the secret at rest.

Codes are computed from the secret the API hands out with pyotp, an implementation other than
ours. A code works once per account, so a test that logs in more than once uses the codes of the
steps around now in order (each accepted within one step either side): `enrol` confirms with the
previous step's code, which leaves the current and the next one for the test.
"""

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import httpx
import pyotp
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient, Response

from app.api.routes import mfa as mfa_routes
from app.core.config import MFA_MAX_FAILURES_PER_ACCOUNT, MFA_MAX_FAILURES_PER_TOKEN, SECRET_KEY
from app.models.user import UserInDB, UserPublic
from app.services import mfa
from scripts.live_server import live_server
from tests.conftest import TEST_DATABASE_URL, bearer, create_user, log_in

PASSWORD = "heatcavslakers"  # test_user's
PERIOD = 30


def until_steady() -> float:
    """How long to wait out the last seconds of a time step, so that codes computed after it keep
    their step while the test uses them (a test takes well under a second)."""
    into_step = time.time() % PERIOD
    return PERIOD - into_step + 0.2 if into_step > PERIOD - 4 else 0.0


async def steady() -> None:
    await asyncio.sleep(until_steady())


def code_at(totp: pyotp.TOTP, steps_from_now: int) -> str:
    return totp.at(time.time() + steps_from_now * PERIOD)


async def enrol(app: FastAPI, client: AsyncClient) -> tuple[pyotp.TOTP, list[str]]:
    """Turn the factor on for the client's user; its TOTP and its recovery codes."""
    await steady()
    start = await client.post(app.url_path_for("users:start-mfa-enrolment"))
    assert start.status_code == status.HTTP_201_CREATED, start.text
    totp = pyotp.TOTP(start.json()["secret"])
    confirm = await client.post(app.url_path_for("users:confirm-mfa-enrolment"), json={"code": code_at(totp, -1)})
    assert confirm.status_code == status.HTTP_200_OK, confirm.text
    return totp, confirm.json()["recovery_codes"]


async def second_step(app: FastAPI, client: AsyncClient, mfa_token: str, code: str) -> Response:
    return await client.post(app.url_path_for("users:login-mfa"), json={"mfa_token": mfa_token, "code": code})


async def password_step(app: FastAPI, client: AsyncClient, login: str = "lebron@james.io") -> str:
    res = await log_in(app, client, login, PASSWORD)
    assert res.status_code == status.HTTP_200_OK, res.text
    body = res.json()
    assert body["mfa_required"] is True
    return str(body["mfa_token"])


async def events_of(db: Database, kind: str) -> list[dict[str, Any]]:
    rows = await db.fetch_all(
        "SELECT user_id, client_address, detail FROM security_events WHERE kind = :kind ORDER BY id", {"kind": kind}
    )
    return [dict(row._mapping) for row in rows]


class TestOurTotp:
    # RFC 6238, Appendix B: the seeds are the ASCII digits, 20, 32 and 64 bytes long; 8 digits.
    SEEDS: ClassVar[dict[str, bytes]] = {
        "sha1": b"12345678901234567890",
        "sha256": b"12345678901234567890123456789012",
        "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
    }
    VECTORS: ClassVar[list[tuple[int, str, str, str]]] = [
        (59, "94287082", "46119246", "90693936"),
        (1111111109, "07081804", "68084774", "25091201"),
        (1111111111, "14050471", "67062674", "99943326"),
        (1234567890, "89005924", "91819424", "93441116"),
        (2000000000, "69279037", "90698825", "38618901"),
        (20000000000, "65353130", "77737706", "47863826"),
    ]

    @pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), VECTORS)
    def test_our_codes_are_the_rfcs_test_vectors(self, at: int, sha1: str, sha256: str, sha512: str) -> None:
        for digest, expected in (("sha1", sha1), ("sha256", sha256), ("sha512", sha512)):
            assert mfa.totp(self.SEEDS[digest], at, digits=8, digest=digest) == expected

    def test_pyotp_computes_the_same_six_digit_codes_from_the_secret_we_hand_out(self) -> None:
        secret = mfa.new_secret()
        other = pyotp.TOTP(mfa.secret_text(secret))
        for at in (0, 59, time.time(), 2**33):
            assert mfa.totp(secret, at) == other.at(at)

    def test_a_code_matches_its_step_and_one_either_side_only(self) -> None:
        secret, at = mfa.new_secret(), 1_700_000_000.0
        step = mfa.time_step(at)
        for offset in (-1, 0, 1):
            assert step + offset in mfa.matching_steps(secret, mfa.totp(secret, at + offset * PERIOD), at=at)
        for offset in (-2, 2):
            assert step + offset not in mfa.matching_steps(secret, mfa.totp(secret, at + offset * PERIOD), at=at)


class TestEnrolment:
    async def test_start_hands_out_a_secret_its_uri_and_a_qr_code_and_changes_nothing_yet(
        self, app: FastAPI, client: AsyncClient, client_for: Callable[..., AsyncClient], test_user: UserPublic
    ) -> None:
        res = await client_for(test_user).post(app.url_path_for("users:start-mfa-enrolment"))
        assert res.status_code == status.HTTP_201_CREATED
        body = res.json()
        assert len(base64.b32decode(body["secret"])) == 20  # 160 bits, no padding needed
        parsed = pyotp.parse_uri(body["otpauth_uri"])
        assert (parsed.secret, parsed.issuer, parsed.name) == (body["secret"], "Phresh", test_user.email)
        assert body["qr_svg"].startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in body["qr_svg"]
        # not on until confirmed: the login is as it was
        status_now = await client_for(test_user).get(app.url_path_for("users:get-mfa-status"))
        assert status_now.json() == {"enabled": False, "enabled_at": None, "recovery_codes_left": 0}
        login = await log_in(app, client, test_user.email, PASSWORD)
        assert login.status_code == 200 and "access_token" in login.json()

    async def test_a_right_code_turns_it_on_with_ten_single_use_recovery_codes(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        _, codes = await enrol(app, client_for(test_user))
        assert len(codes) == 10 and len(set(codes)) == 10
        assert all(len(code) == 14 and code.count("-") == 2 for code in codes)
        res = await client_for(test_user).get(app.url_path_for("users:get-mfa-status"))
        assert res.json()["enabled"] is True and res.json()["recovery_codes_left"] == 10
        # stored as hashes only
        stored = [bytes(row["code_hash"]) for row in await db.fetch_all("SELECT code_hash FROM recovery_codes")]
        assert len(stored) == 10 and not any(code.replace("-", "").encode() in stored for code in codes)
        login = await log_in(app, client, test_user.email, PASSWORD)
        assert login.json()["mfa_required"] is True and "access_token" not in login.json()
        assert await events_of(db, "mfa_enabled") == [
            {"user_id": test_user.id, "client_address": "127.0.0.1", "detail": None}
        ]

    @pytest.mark.parametrize("code", ["000000", "12345", "abcdef", "1234567", " "])
    async def test_a_wrong_code_leaves_it_off(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic, code: str
    ) -> None:
        client = client_for(test_user)
        start = await client.post(app.url_path_for("users:start-mfa-enrolment"))
        right = pyotp.TOTP(start.json()["secret"]).now()
        if code == "000000" and right == code:  # one chance in a million
            code = "000001"
        res = await client.post(app.url_path_for("users:confirm-mfa-enrolment"), json={"code": code})
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": mfa_routes.WRONG_ENROLMENT_CODE}
        assert (await client.get(app.url_path_for("users:get-mfa-status"))).json()["enabled"] is False

    async def test_confirming_without_a_start_or_when_on_is_refused_plainly(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic
    ) -> None:
        client = client_for(test_user)
        res = await client.post(app.url_path_for("users:confirm-mfa-enrolment"), json={"code": "123456"})
        assert (res.status_code, res.json()) == (400, {"detail": mfa_routes.MFA_NOT_STARTED})
        totp, _ = await enrol(app, client)
        res = await client.post(app.url_path_for("users:confirm-mfa-enrolment"), json={"code": totp.now()})
        assert (res.status_code, res.json()) == (400, {"detail": mfa_routes.MFA_ALREADY_ON})
        res = await client.post(app.url_path_for("users:start-mfa-enrolment"))
        assert (res.status_code, res.json()) == (400, {"detail": mfa_routes.MFA_ALREADY_ON})

    async def test_starting_again_replaces_the_secret_not_yet_confirmed(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic
    ) -> None:
        client = client_for(test_user)
        first = pyotp.TOTP((await client.post(app.url_path_for("users:start-mfa-enrolment"))).json()["secret"])
        second = pyotp.TOTP((await client.post(app.url_path_for("users:start-mfa-enrolment"))).json()["secret"])
        confirm = app.url_path_for("users:confirm-mfa-enrolment")
        if first.now() != second.now():
            assert (await client.post(confirm, json={"code": first.now()})).status_code == 400
        assert (await client.post(confirm, json={"code": second.now()})).status_code == 200

    @pytest.mark.parametrize("body", [{}, {"code": None}, {"code": "1" * 65}, {"code": 123456}, {"code": "\x00"}])
    async def test_malformed_confirmations_are_422(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic, body: dict[str, Any]
    ) -> None:
        res = await client_for(test_user).post(app.url_path_for("users:confirm-mfa-enrolment"), json=body)
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT

    async def test_anonymous_callers_cannot_enrol(self, app: FastAPI, client: AsyncClient) -> None:
        for name in ("users:start-mfa-enrolment", "users:confirm-mfa-enrolment", "users:renew-recovery-codes"):
            assert (await client.post(app.url_path_for(name), json={"code": "123456"})).status_code == 401
        assert (await client.get(app.url_path_for("users:get-mfa-status"))).status_code == 401

    async def test_two_confirmations_at_once_exactly_one_wins(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic, db: Database
    ) -> None:
        for _ in range(5):
            await db.execute("DELETE FROM second_factors")
            await steady()
            first, second = client_for(test_user), client_for(test_user)
            totp = pyotp.TOTP((await first.post(app.url_path_for("users:start-mfa-enrolment"))).json()["secret"])
            confirm = app.url_path_for("users:confirm-mfa-enrolment")
            answers = await asyncio.gather(
                first.post(confirm, json={"code": totp.now()}), second.post(confirm, json={"code": totp.now()})
            )
            assert sorted(res.status_code for res in answers) == [200, 400]
            [winner] = [res for res in answers if res.status_code == 200]
            [loser] = [res for res in answers if res.status_code == 400]
            assert loser.json() == {"detail": mfa_routes.MFA_ALREADY_ON}
            # one set of recovery codes, the winner's, and they work
            assert await db.fetch_val("SELECT count(*) FROM recovery_codes") == 10
            assert await mfa.check_second_factor(db, test_user.id, winner.json()["recovery_codes"][0])
            await db.execute("DELETE FROM recovery_codes")


class TestLoginWithTheFactorOn:
    async def test_the_password_step_answers_mfa_required_and_starts_no_session(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        await enrol(app, client_for(test_user))
        sessions_before = await db.fetch_val("SELECT count(*) FROM sessions")
        res = await log_in(app, client, test_user.email, PASSWORD)
        assert res.status_code == 200
        body = res.json()
        assert set(body) == {"mfa_required", "mfa_token", "token_type", "expires_in"}
        assert (body["mfa_required"], body["token_type"], body["expires_in"]) == (True, "mfa", 300)
        assert await db.fetch_val("SELECT count(*) FROM sessions") == sessions_before
        # the token is no access token
        assert (
            await client.get(app.url_path_for("users:get-current-user"), headers=bearer(body["mfa_token"]))
        ).status_code == 401
        # and a wrong password is the usual failure, with no token
        wrong = await log_in(app, client, test_user.email, "not the password")
        assert (wrong.status_code, "mfa_token" in wrong.text) == (401, False)

    async def test_a_current_code_completes_the_login_as_login_answers(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        totp, _ = await enrol(app, client_for(test_user))
        token = await password_step(app, client)
        res = await second_step(app, client, token, totp.now())
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["token_type"] == "bearer" and body["refresh_token"] and body["expires_in"] > 0
        me = await client.get(app.url_path_for("users:get-current-user"), headers=bearer(body["access_token"]))
        assert me.status_code == 200 and me.json()["email"] == test_user.email
        [event] = await events_of(db, "login_success")
        assert event["detail"].endswith("second factor: code")

    async def test_a_code_works_once_and_so_does_the_mfa_token(
        self, app: FastAPI, client: AsyncClient, client_for: Callable[..., AsyncClient], test_user: UserPublic
    ) -> None:
        totp, _ = await enrol(app, client_for(test_user))
        code = totp.now()
        token = await password_step(app, client)
        assert (await second_step(app, client, token, code)).status_code == 200
        replay = await second_step(app, client, await password_step(app, client), code)
        assert (replay.status_code, replay.json()) == (401, {"detail": mfa_routes.WRONG_CODE})
        again = await second_step(app, client, token, code_at(totp, 1))
        assert (again.status_code, again.json()) == (401, {"detail": mfa_routes.INVALID_MFA_TOKEN})

    async def test_codes_are_accepted_one_step_either_side_and_never_an_older_one_after_a_newer(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        totp, _ = await enrol(app, client_for(test_user))
        await db.execute("UPDATE second_factors SET last_used_step = 0")  # as if the enrolment's code were older
        await steady()
        too_old, too_new = code_at(totp, -2), code_at(totp, 2)
        for code in (too_old, too_new):
            if code not in (code_at(totp, -1), totp.now(), code_at(totp, 1)):
                assert (await second_step(app, client, await password_step(app, client), code)).status_code == 401
        assert (await second_step(app, client, await password_step(app, client), code_at(totp, 1))).status_code == 200
        older = totp.now()
        if older != code_at(totp, 1):
            # the next step's code was taken: the current one, older, is refused
            assert (await second_step(app, client, await password_step(app, client), older)).status_code == 401

    async def test_a_recovery_code_works_once_in_any_case_and_spacing(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        _, codes = await enrol(app, client_for(test_user))
        typed = " " + codes[3].lower().replace("-", " ") + " "
        assert (await second_step(app, client, await password_step(app, client), typed)).status_code == 200
        again = await second_step(app, client, await password_step(app, client), codes[3])
        assert (again.status_code, again.json()) == (401, {"detail": mfa_routes.WRONG_CODE})
        status_now = await client_for(test_user).get(app.url_path_for("users:get-mfa-status"))
        assert status_now.json()["recovery_codes_left"] == 9
        [event] = await events_of(db, "login_success")
        assert event["detail"].endswith("second factor: recovery code")

    async def test_wrong_codes_are_limited_per_mfa_token(
        self, app: FastAPI, client: AsyncClient, client_for: Callable[..., AsyncClient], test_user: UserPublic
    ) -> None:
        totp, _ = await enrol(app, client_for(test_user))
        token = await password_step(app, client)
        wrong = "000000" if totp.now() != "000000" else "111111"
        for _ in range(MFA_MAX_FAILURES_PER_TOKEN):
            assert (await second_step(app, client, token, wrong)).status_code == 401
        refused = await second_step(app, client, token, totp.now())
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        # a new password step, a new token: the right code works (the account's limit is not reached)
        assert MFA_MAX_FAILURES_PER_ACCOUNT > MFA_MAX_FAILURES_PER_TOKEN
        assert (await second_step(app, client, await password_step(app, client), totp.now())).status_code == 200

    async def test_wrong_codes_are_limited_per_account_across_tokens(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        totp, codes = await enrol(app, client_for(test_user))
        wrong = "000000" if totp.now() != "000000" else "111111"
        for _ in range(MFA_MAX_FAILURES_PER_ACCOUNT):
            assert (await second_step(app, client, await password_step(app, client), wrong)).status_code == 401
        refused = await second_step(app, client, await password_step(app, client), codes[0])
        assert refused.status_code == 429
        assert await events_of(db, "mfa_lockout")
        # the refused attempt spent nothing: the recovery code is still there for later
        assert await db.fetch_val("SELECT count(*) FROM recovery_codes WHERE used_at IS NULL") == 10

    async def test_the_mfa_token_expires_after_five_minutes(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        totp, _ = await enrol(app, client_for(test_user))
        token = await password_step(app, client)
        lifetime = await db.fetch_val("SELECT extract(epoch FROM expires_at - created_at) FROM mfa_challenges")
        assert float(lifetime) == 300
        await db.execute("UPDATE mfa_challenges SET expires_at = now() - interval '1 second'")
        res = await second_step(app, client, token, totp.now())
        assert (res.status_code, res.json()) == (401, {"detail": mfa_routes.INVALID_MFA_TOKEN})

    async def test_a_password_change_in_between_voids_the_mfa_token(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        totp, _ = await enrol(app, client_for(test_user))
        token = await password_step(app, client)
        await db.execute("UPDATE users SET token_version = token_version + 1 WHERE id = :id", {"id": test_user.id})
        assert (await second_step(app, client, token, totp.now())).status_code == 401

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({"mfa_token": "not-a-token", "code": "123456"}, 401),
            ({"mfa_token": "A" * 43, "code": "123456"}, 401),
            ({"mfa_token": "A" * 129, "code": "123456"}, 422),
            ({"mfa_token": "A" * 43}, 422),
            ({"code": "123456"}, 422),
            ({"mfa_token": "A" * 43, "code": "1" * 65}, 422),
            ({"mfa_token": "\x00", "code": "123456"}, 422),
        ],
    )
    async def test_bad_second_steps_are_a_clear_4xx(
        self, app: FastAPI, client: AsyncClient, body: dict[str, Any], expected: int
    ) -> None:
        assert (await client.post(app.url_path_for("users:login-mfa"), json=body)).status_code == expected

    async def test_accounts_without_the_factor_log_in_with_the_tutorials_form_as_before(
        self, app: FastAPI, client: AsyncClient, test_user: UserPublic
    ) -> None:
        res = await log_in(app, client, test_user.email, PASSWORD)
        assert res.status_code == 200
        assert set(res.json()) == {"access_token", "token_type", "expires_in", "refresh_token"}

    async def test_one_mfa_token_sent_twice_at_once_starts_one_session(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        totp, codes = await enrol(app, client_for(test_user))
        token = await password_step(app, client)
        sessions_before = await db.fetch_val("SELECT count(*) FROM sessions")
        answers = await asyncio.gather(
            second_step(app, client, token, totp.now()), second_step(app, client, token, codes[0])
        )
        assert sorted(res.status_code for res in answers) == [200, 401]
        assert await db.fetch_val("SELECT count(*) FROM sessions") == sessions_before + 1

    def test_the_same_code_at_once_on_two_workers_logs_in_once(self, db: Database, test_user: UserPublic) -> None:
        with live_server(TEST_DATABASE_URL, workers=2) as base_url:
            access = httpx.post(
                f"{base_url}/api/users/login/token/", data={"username": test_user.email, "password": PASSWORD}
            )
            headers = bearer(access.json()["access_token"])
            start = httpx.post(f"{base_url}/api/users/me/mfa/enrolment/", headers=headers)
            totp = pyotp.TOTP(start.json()["secret"])
            time.sleep(until_steady())
            confirm = httpx.post(
                f"{base_url}/api/users/me/mfa/enrolment/confirm/", json={"code": code_at(totp, -1)}, headers=headers
            )
            assert confirm.status_code == 200
            for steps_from_now in (0, 1):  # a round per step: each code can be taken once
                tokens = [
                    httpx.post(
                        f"{base_url}/api/users/login/token/", data={"username": test_user.email, "password": PASSWORD}
                    ).json()["mfa_token"]
                    for _ in range(3)
                ]
                code = code_at(totp, steps_from_now)
                barrier = threading.Barrier(len(tokens))
                answers: list[int] = []

                def send(
                    mfa_token: str, code: str = code, barrier: threading.Barrier = barrier, answers: list[int] = answers
                ) -> None:
                    with httpx.Client() as client:  # a connection each: the requests spread over both workers
                        barrier.wait()
                        res = client.post(
                            f"{base_url}/api/users/login/mfa/", json={"mfa_token": mfa_token, "code": code}
                        )
                        answers.append(res.status_code)

                threads = [threading.Thread(target=send, args=(mfa_token,)) for mfa_token in tokens]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                assert sorted(answers) == [200, 401, 401], answers


class TestTurningItOff:
    async def test_it_takes_the_password_and_a_code_and_ends_every_other_session(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
    ) -> None:
        mine, other = client_for(test_user), client_for(test_user)
        totp, _ = await enrol(app, mine)
        assert (await other.get(app.url_path_for("users:get-current-user"))).status_code == 200
        disable = app.url_path_for("users:disable-mfa")
        wrong_password = await mine.post(disable, json={"password": "nope", "code": totp.now()})
        assert (wrong_password.status_code, wrong_password.json()) == (400, {"detail": mfa_routes.WRONG_PASSWORD})
        wrong = "000000" if totp.now() != "000000" else "111111"
        wrong_code = await mine.post(disable, json={"password": PASSWORD, "code": wrong})
        assert (wrong_code.status_code, wrong_code.json()) == (400, {"detail": mfa_routes.WRONG_CODE})
        assert (await mine.get(app.url_path_for("users:get-mfa-status"))).json()["enabled"] is True

        res = await mine.post(disable, json={"password": PASSWORD, "code": totp.now()})
        assert res.status_code == 200, res.text
        assert res.json() == {"enabled": False, "sessions_ended": 1}
        assert (await other.get(app.url_path_for("users:get-current-user"))).status_code == 401
        assert (await mine.get(app.url_path_for("users:get-current-user"))).status_code == 200
        login = await log_in(app, client, test_user.email, PASSWORD)
        assert "access_token" in login.json()
        assert await db.fetch_val("SELECT count(*) FROM recovery_codes") == 0
        [event] = await events_of(db, "mfa_disabled")
        assert event["user_id"] == test_user.id and "1 other sessions ended" in event["detail"]

    async def test_a_recovery_code_does_instead_of_a_code(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic
    ) -> None:
        client = client_for(test_user)
        _, codes = await enrol(app, client)
        res = await client.post(app.url_path_for("users:disable-mfa"), json={"password": PASSWORD, "code": codes[9]})
        assert res.status_code == 200

    async def test_when_it_is_off_there_is_nothing_to_turn_off(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic
    ) -> None:
        res = await client_for(test_user).post(
            app.url_path_for("users:disable-mfa"), json={"password": PASSWORD, "code": "123456"}
        )
        assert (res.status_code, res.json()) == (400, {"detail": mfa_routes.MFA_NOT_ON})

    async def test_wrong_codes_here_count_against_the_same_account_limit(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], test_user: UserPublic
    ) -> None:
        client = client_for(test_user)
        totp, _ = await enrol(app, client)
        wrong = "000000" if totp.now() != "000000" else "111111"
        disable = app.url_path_for("users:disable-mfa")
        for _ in range(MFA_MAX_FAILURES_PER_ACCOUNT):
            assert (await client.post(disable, json={"password": PASSWORD, "code": wrong})).status_code == 400
        assert (await client.post(disable, json={"password": PASSWORD, "code": totp.now()})).status_code == 429


class TestRecoveryCodes:
    async def test_new_codes_replace_the_old_ones(
        self, app: FastAPI, client: AsyncClient, client_for: Callable[..., AsyncClient], test_user: UserPublic
    ) -> None:
        mine = client_for(test_user)
        totp, old = await enrol(app, mine)
        renewal = await mine.post(app.url_path_for("users:renew-recovery-codes"), json={"code": totp.now()})
        assert renewal.status_code == 200
        new = renewal.json()["recovery_codes"]
        assert len(new) == 10 and not set(new) & set(old)
        assert (await second_step(app, client, await password_step(app, client), old[0])).status_code == 401
        assert (await second_step(app, client, await password_step(app, client), new[0])).status_code == 200


class TestSuperuserReset:
    async def test_a_superuser_turns_a_users_factor_off_audited(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        test_superuser: UserInDB,
        db: Database,
    ) -> None:
        await enrol(app, client_for(test_user))
        reset = app.url_path_for("users:reset-user-mfa", user_id=str(test_user.id))
        assert (await client_for(test_user).post(reset)).status_code == 403
        assert (await client.post(reset)).status_code == 401
        res = await client_for(test_superuser).post(reset)
        assert res.status_code == 200
        assert res.json() == {"user_id": test_user.id, "was_enabled": True, "enabled": False}
        login = await log_in(app, client, test_user.email, PASSWORD)
        assert "access_token" in login.json()
        [event] = await events_of(db, "mfa_reset")
        assert event["user_id"] == test_user.id and event["detail"] == f"by superuser {test_superuser.id}: was on"

    @pytest.mark.parametrize(("user_id", "expected"), [("999999", 404), ("0", 422), ("x", 422), ("2147483648", 422)])
    async def test_an_unknown_user_is_404_and_a_bad_id_422(
        self,
        app: FastAPI,
        client_for: Callable[..., AsyncClient],
        test_superuser: UserInDB,
        user_id: str,
        expected: int,
    ) -> None:
        res = await client_for(test_superuser).post(f"/api/users/{user_id}/mfa/reset/")
        assert res.status_code == expected


class TestTheSecretAtRest:
    async def test_the_secret_is_stored_sealed_and_never_logged(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        db: Database,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        totp, codes = await enrol(app, client_for(test_user))
        secret = base64.b32decode(totp.secret + "=" * (-len(totp.secret) % 8))
        sealed = bytes(await db.fetch_val("SELECT secret_sealed FROM second_factors"))
        assert secret not in sealed and totp.secret.encode() not in sealed
        assert mfa.open_secret(sealed, user_id=test_user.id) == secret
        # bound to its user: the same bytes do not open for anyone else
        assert mfa.open_secret(sealed, user_id=test_user.id + 1) is None
        await second_step(app, client, await password_step(app, client), totp.now())
        logged = caplog.text + " ".join(
            str(row["detail"]) for row in await db.fetch_all("SELECT detail FROM security_events")
        )
        assert totp.secret not in logged and not any(code in logged for code in codes)

    async def test_after_a_key_rotation_the_factor_still_works(
        self,
        app: FastAPI,
        client_for: Callable[..., AsyncClient],
        test_user: UserPublic,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        totp, codes = await enrol(app, client_for(test_user))
        monkeypatch.setattr(mfa.config, "SECRET_KEY", "another key, at least thirty-two bytes long")
        monkeypatch.setattr(mfa, "PREVIOUS_KEYS", (str(SECRET_KEY),))
        db: Database = app.state._db
        assert await mfa.check_second_factor(db, test_user.id, totp.now())
        assert await mfa.check_second_factor(db, test_user.id, codes[0])


class TestForOtherModules:
    """`second_factor_on` and `check_second_factor`, as the account deletion uses them."""

    async def test_check_second_factor_takes_each_code_once_and_counts_wrong_ones(
        self, app: FastAPI, client_for: Callable[..., AsyncClient], db: Database
    ) -> None:
        user = await create_user(db, email="twofa@example.com", username="twofa", password=PASSWORD)
        assert not await mfa.second_factor_on(db, user.id)
        assert not await mfa.check_second_factor(db, user.id, "123456")
        totp, codes = await enrol(app, client_for(user))
        assert await mfa.second_factor_on(db, user.id)
        code = totp.now()
        assert await mfa.check_second_factor(db, user.id, code)
        assert not await mfa.check_second_factor(db, user.id, code)
        assert await mfa.check_second_factor(db, user.id, codes[1])
        assert not await mfa.check_second_factor(db, user.id, codes[1])
        for _ in range(MFA_MAX_FAILURES_PER_ACCOUNT - 1):
            assert not await mfa.check_second_factor(db, user.id, "not a code")
        with pytest.raises(mfa.SecondFactorThrottled) as refused:
            await mfa.check_second_factor(db, user.id, codes[2])
        assert refused.value.retry_after > 0
