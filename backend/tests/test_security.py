"""What people try against an auth server, and what stops them."""

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable

import asyncpg
import bcrypt
import httpx
import jwt
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient

from app.api.routes.users import EMAIL_TAKEN, USERNAME_TAKEN
from app.core.config import (
    LOGIN_FAILURE_WINDOW_SECONDS,
    LOGIN_MAX_FAILURES_PER_ACCOUNT,
    LOGIN_MAX_FAILURES_PER_ADDRESS,
    MAX_REQUEST_BODY_BYTES,
    REGISTER_MAX_PER_ADDRESS,
    SECRET_KEY,
)
from app.core.logging import formatter_for
from app.db.repositories.users import UsersRepository
from app.models.user import UserInDB, UserPublic
from app.services import auth_service
from scripts.live_server import live_server
from tests.conftest import TEST_DATABASE_URL, log_in, session_token, stored

PASSWORD = "heatcavslakers"  # test_user's


def register_body(i: int | str, **changes: str) -> dict[str, dict[str, str]]:
    return {"new_user": {"email": f"user{i}@example.com", "username": f"user{i}", "password": "a-password", **changes}}


class TestStoredHashesUpgradeThemselves:
    async def test_raising_the_cost_rehashes_at_the_next_successful_login(
        self, db: Database, test_user: UserPublic
    ) -> None:
        user_in_db = await stored(db, test_user)
        assert ",r=4$" in user_in_db.password
        with live_server(TEST_DATABASE_URL, env={"BCRYPT_ROUNDS": "5"}) as base_url:
            form = {"username": test_user.email, "password": "not-it"}
            assert httpx.post(f"{base_url}/api/users/login/token/", data=form).status_code == 401
            unchanged = await stored(db, test_user)
            assert unchanged.password == user_in_db.password  # a failure changes nothing

            form["password"] = PASSWORD
            assert httpx.post(f"{base_url}/api/users/login/token/", data=form).status_code == 200

        upgraded = await stored(db, test_user)
        assert ",r=5$" in upgraded.password and upgraded.password != user_in_db.password
        assert upgraded.salt == user_in_db.salt
        assert auth_service.verify_password(password=PASSWORD, salt=upgraded.salt, hashed_pw=upgraded.password)
        assert upgraded.token_version == user_in_db.token_version  # same password: no token is revoked

    async def test_the_tutorials_plain_bcrypt_hashes_still_log_in_and_are_upgraded(
        self, app: FastAPI, client: AsyncClient, db: Database
    ) -> None:
        salt = bcrypt.gensalt().decode()
        legacy = bcrypt.hashpw(("old-school" + salt).encode(), bcrypt.gensalt(4)).decode()
        await db.execute(
            "WITH veteran AS ("
            "  INSERT INTO users (username, email, password, salt)"
            "  VALUES ('veteran', 'veteran@example.com', :h, :s) RETURNING id"
            ") INSERT INTO profiles (user_id) SELECT id FROM veteran",
            values={"h": legacy, "s": salt},
        )
        assert (await log_in(app, client, "veteran@example.com", "old-school")).status_code == status.HTTP_200_OK
        user = await UsersRepository(db).get_user_by_email(email="veteran@example.com", populate=False)
        assert user is not None and user.password.startswith("$bcrypt-sha256$")
        assert (await log_in(app, client, "veteran@example.com", "old-school")).status_code == status.HTTP_200_OK
        assert (await log_in(app, client, "veteran@example.com", "old-schoo")).status_code == 401


class TestEnumeration:
    async def test_an_unknown_email_pays_for_a_dummy_password_check(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB
    ) -> None:
        before = auth_service.dummy_verifications
        assert (await log_in(app, client, "nobody@example.com", PASSWORD)).status_code == 401
        assert auth_service.dummy_verifications == before + 1
        # a known user with a wrong password pays for the real check instead
        assert (await log_in(app, client, test_user.email, "wrong-password")).status_code == 401
        assert auth_service.dummy_verifications == before + 1


class TestNamesAreUniqueWhateverTheirCase:
    @pytest.mark.parametrize(
        "changes, detail",
        (
            ({"email": "LeBron@James.io"}, EMAIL_TAKEN),
            ({"email": "LEBRON@JAMES.IO"}, EMAIL_TAKEN),
            ({"username": "LeBronJames"}, USERNAME_TAKEN),
            ({"username": "LEBRONJAMES"}, USERNAME_TAKEN),
        ),
    )
    async def test_a_name_in_another_case_is_taken(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB, changes: dict[str, str], detail: str
    ) -> None:
        res = await client.post(app.url_path_for("users:register-new-user"), json=register_body("x", **changes))
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": detail}

    async def test_the_database_itself_refuses_case_duplicates(self, db: Database, test_user: UserInDB) -> None:
        for email, username in (("LEBRON@james.io", "someone"), ("someone@example.com", "LebronJames")):
            with pytest.raises(asyncpg.UniqueViolationError):
                await db.execute(
                    "INSERT INTO users (username, email, password, salt) VALUES (:u, :e, 'h', 's')",
                    values={"u": username, "e": email},
                )

    async def test_lookups_ignore_case_and_keep_the_spelling_given(self, db: Database, test_user: UserInDB) -> None:
        user_repo = UsersRepository(db)
        assert await user_repo.get_user_by_email(email="LEBRON@James.IO") == test_user
        assert await user_repo.get_user_by_username(username="LEBRONJAMES") == test_user
        assert test_user.email == "lebron@james.io"


class TestBruteForce:
    async def test_an_account_locks_after_repeated_failures_even_for_the_right_password(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB
    ) -> None:
        for _ in range(LOGIN_MAX_FAILURES_PER_ACCOUNT):
            assert (await log_in(app, client, test_user.email, "guess")).status_code == 401
        for password in ("guess", PASSWORD):
            res = await log_in(app, client, test_user.email, password)
            assert res.status_code == status.HTTP_429_TOO_MANY_REQUESTS
            assert res.json() == {"detail": "Too many attempts. Try again later."}
            assert 1 <= int(res.headers["Retry-After"]) <= LOGIN_FAILURE_WINDOW_SECONDS
            assert "access_token" not in res.text

    async def test_accounts_that_do_not_exist_lock_the_same_way(self, app: FastAPI, client: AsyncClient) -> None:
        codes = [(await log_in(app, client, "ghost@example.com", "guess")).status_code for _ in range(7)]
        assert codes == [401] * LOGIN_MAX_FAILURES_PER_ACCOUNT + [429] * (7 - LOGIN_MAX_FAILURES_PER_ACCOUNT)

    async def test_the_account_is_matched_whatever_the_case_typed(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB
    ) -> None:
        for i in range(LOGIN_MAX_FAILURES_PER_ACCOUNT):
            typed = test_user.email.upper() if i % 2 else f"  {test_user.email} "
            assert (await log_in(app, client, typed, "guess")).status_code == 401
        assert (await log_in(app, client, test_user.email, PASSWORD)).status_code == 429

    async def test_a_successful_login_clears_the_accounts_count(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB
    ) -> None:
        for _ in range(LOGIN_MAX_FAILURES_PER_ACCOUNT - 1):
            assert (await log_in(app, client, test_user.email, "guess")).status_code == 401
        assert (await log_in(app, client, test_user.email, PASSWORD)).status_code == 200
        for _ in range(LOGIN_MAX_FAILURES_PER_ACCOUNT):
            assert (await log_in(app, client, test_user.email, "guess")).status_code == 401

    async def test_the_account_limit_holds_across_client_addresses(
        self, app: FastAPI, client_from: Callable[[str], AsyncClient], test_user: UserInDB
    ) -> None:
        for i in range(LOGIN_MAX_FAILURES_PER_ACCOUNT):
            assert (await log_in(app, client_from(f"198.51.100.{i}"), test_user.email, "guess")).status_code == 401
        res = await log_in(app, client_from("198.51.100.99"), test_user.email, PASSWORD)
        assert res.status_code == 429

    async def test_the_address_limit_holds_across_accounts_and_spares_other_addresses(
        self, app: FastAPI, client_from: Callable[[str], AsyncClient], test_user: UserInDB
    ) -> None:
        attacker = client_from("203.0.113.7")
        # One failure per name, never reaching any account's limit; a forged X-Forwarded-For
        # changes nothing while CLIENT_ADDRESS_HEADER is unset.
        for i in range(LOGIN_MAX_FAILURES_PER_ADDRESS):
            res = await attacker.post(
                app.url_path_for("users:login-email-and-password"),
                data={"username": f"name{i}@example.com", "password": "guess"},
                headers={"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": f"10.9.8.{i}"},
            )
            assert res.status_code == 401
        assert (await log_in(app, attacker, test_user.email, PASSWORD)).status_code == 429
        assert (await log_in(app, client_from("203.0.113.8"), test_user.email, PASSWORD)).status_code == 200

    async def test_the_default_limits_leave_room_for_an_office_full_of_typos(self) -> None:
        assert LOGIN_MAX_FAILURES_PER_ADDRESS >= 10 * LOGIN_MAX_FAILURES_PER_ACCOUNT

    async def test_the_counts_live_in_postgresql_and_hold_across_processes(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB
    ) -> None:
        for _ in range(LOGIN_MAX_FAILURES_PER_ACCOUNT):
            assert (await log_in(app, client, test_user.email, "guess")).status_code == 401
        with live_server(TEST_DATABASE_URL) as base_url:  # another process: another worker, or a restart
            form = {"username": test_user.email, "password": PASSWORD}
            assert httpx.post(f"{base_url}/api/users/login/token/", data=form).status_code == 429

    async def test_behind_a_proxy_the_address_comes_from_the_configured_header(self, test_user: UserInDB) -> None:
        env = {
            "TRUSTED_PROXIES": "127.0.0.1",
            "CLIENT_ADDRESS_HEADER": "X-Forwarded-For",
            "LOGIN_MAX_FAILURES_PER_ADDRESS": "3",
        }
        with live_server(TEST_DATABASE_URL, env=env) as base_url:
            login = f"{base_url}/api/users/login/token/"

            def attempt(name: str, forwarded_for: str) -> int:
                form = {"username": name, "password": "guess"}
                return httpx.post(login, data=form, headers={"X-Forwarded-For": forwarded_for}).status_code

            # the last entry is the one the proxy added; what the client claimed before it is ignored
            assert [attempt(f"n{i}@example.com", f"1.1.1.{i}, 192.0.2.1") for i in range(4)] == [401, 401, 401, 429]
            assert attempt("n9@example.com", "192.0.2.2") == 401

    async def test_registration_is_limited_per_address(
        self, app: FastAPI, client_from: Callable[[str], AsyncClient]
    ) -> None:
        busy = client_from("192.0.2.50")
        path = app.url_path_for("users:register-new-user")
        for i in range(REGISTER_MAX_PER_ADDRESS):
            assert (await busy.post(path, json=register_body(i))).status_code == 201
        res = await busy.post(path, json=register_body("over"))
        assert res.status_code == 429 and int(res.headers["Retry-After"]) >= 1
        assert (await client_from("192.0.2.51").post(path, json=register_body("elsewhere"))).status_code == 201

    async def test_guessing_the_current_password_on_a_password_change_is_limited(
        self, app: FastAPI, authorized_client: AsyncClient
    ) -> None:
        path = app.url_path_for("users:change-password")
        body = {"password_change": {"current_password": "guess", "new_password": "a-brand-new-one"}}
        codes = [(await authorized_client.put(path, json=body)).status_code for _ in range(6)]
        assert codes == [400] * LOGIN_MAX_FAILURES_PER_ACCOUNT + [429]

    async def test_parallel_guesses_cannot_slip_past_the_limit(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB
    ) -> None:
        responses = await asyncio.gather(*(log_in(app, client, test_user.email, "guess") for _ in range(20)))
        codes = [res.status_code for res in responses]
        # Every attempt takes its place in the count before it is judged: the first few of a
        # burst are tried, the rest refused. (One more could slip through only if PostgreSQL
        # committed two inserts in the opposite order of their ids, between two round trips.)
        assert LOGIN_MAX_FAILURES_PER_ACCOUNT <= codes.count(401) <= LOGIN_MAX_FAILURES_PER_ACCOUNT + 1
        assert codes.count(401) + codes.count(429) == 20


class TestHostileInput:
    async def test_a_body_over_the_limit_is_413(self, app: FastAPI, client: AsyncClient, db: Database) -> None:
        body = (
            b'{"new_user": {"email": "big@example.com", "username": "big", "password": "'
            + b"x" * (MAX_REQUEST_BODY_BYTES)
            + b'"}}'
        )
        res = await client.post(app.url_path_for("users:register-new-user"), content=body)
        assert res.status_code == status.HTTP_413_CONTENT_TOO_LARGE
        assert "larger than" in res.json()["detail"]
        assert await db.fetch_val("SELECT count(*) FROM users") == 0

    async def test_a_streamed_body_over_the_limit_is_413(self, app: FastAPI, client: AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"new_cleaning": {"name": "'
            for _ in range(MAX_REQUEST_BODY_BYTES // 65536 + 2):
                yield b"x" * 65536
            yield b'", "price": 1}}'

        res = await client.post(app.url_path_for("users:register-new-user"), content=chunks())
        assert res.status_code == status.HTTP_413_CONTENT_TOO_LARGE

    @pytest.mark.parametrize(
        "body, status_code",
        (
            ("[" * 200_000 + "]" * 200_000, 400),  # nested past any recursion limit
            ('{"new_user": {"email": "a@example.com", "username": "abc", "password": ' + "9" * 5000 + "}}", 400),
            ('{"new_user": {"email": "a@example.com", "username": "abc", "password": 1e999}}', 422),
            ('{"new_user": {"email": "nul\\u0000@example.com", "username": "abc", "password": "long-enough"}}', 422),
            ('{"new_user": {"email": "a@example.com", "username": "ab\\u0000c", "password": "long-enough"}}', 422),
            ('{"new_user": {"email": "a@example.com", "username": "abc", "password": "\\ud800-lone-half"}}', 422),
            ('{"new_user": ' + '{"a": 1, ' * 1000 + '"b": 2' + "}" * 1000 + "}", 422),
        ),
    )
    async def test_malformed_and_hostile_json_is_a_4xx(
        self, app: FastAPI, client: AsyncClient, db: Database, body: str, status_code: int
    ) -> None:
        res = await client.post(app.url_path_for("users:register-new-user"), content=body)
        assert res.status_code == status_code
        assert res.json()["detail"]
        assert await db.fetch_val("SELECT count(*) FROM users") == 0

    async def test_a_body_that_is_not_json_is_a_4xx(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.post(
            app.url_path_for("users:register-new-user"), content=b"email=a", headers={"Content-Type": "text/plain"}
        )
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT

    @pytest.mark.parametrize("authorization", ("Bearer " + "a" * 100_000, "Bearer \u00e9\u00e9", "Bearer a.b.c.d.e"))
    async def test_absurd_tokens_are_401(self, app: FastAPI, client: AsyncClient, authorization: str) -> None:
        res = await client.get(
            app.url_path_for("users:get-current-user"), headers={"Authorization": authorization.encode("utf-8")}
        )
        assert res.status_code == status.HTTP_401_UNAUTHORIZED

    async def test_a_login_form_with_odd_bytes_is_401(self, app: FastAPI, client: AsyncClient) -> None:
        for form in (b"username=%00&password=%00", b"username=%ff%fe&password=%80", b"username=a&username=b"):
            res = await client.post(
                app.url_path_for("users:login-email-and-password"),
                content=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert res.status_code == status.HTTP_401_UNAUTHORIZED


class TestCrossOrigin:
    """Any web page may call the API (tokens are never cookies): browsers are told so."""

    async def test_a_preflight_is_answered_with_what_the_browser_asked_for(
        self, app: FastAPI, client: AsyncClient
    ) -> None:
        res = await client.options(
            app.url_path_for("users:update-current-user"),
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert res.status_code == status.HTTP_200_OK
        assert res.headers["access-control-allow-origin"] == "*"
        assert "PUT" in res.headers["access-control-allow-methods"].split(", ")
        assert res.headers["access-control-allow-headers"] == "authorization, content-type"
        assert res.headers["access-control-max-age"] == "600"

    @pytest.mark.parametrize("origin", ("https://app.example.com", None))
    async def test_every_answer_allows_any_origin_whether_or_not_the_request_names_one(
        self, app: FastAPI, client: AsyncClient, origin: str | None
    ) -> None:
        headers = {"Origin": origin} if origin else {}
        for res in (
            await client.get(app.url_path_for("users:get-current-user"), headers=headers),  # 401
            await client.get("/api/health/", headers=headers),
            await client.post(app.url_path_for("users:register-new-user"), headers=headers, content=b"{" * 10),
            await client.post(  # refused by the body limit, before the app sees it
                app.url_path_for("users:register-new-user"),
                headers={**headers, "Content-Length": str(MAX_REQUEST_BODY_BYTES + 1)},
                content=b"x" * (MAX_REQUEST_BODY_BYTES + 1),
            ),
        ):
            assert res.headers["access-control-allow-origin"] == "*", res
            assert "origin" not in res.headers.get("vary", "").lower()  # the answer does not depend on it
        assert res.status_code == status.HTTP_413_CONTENT_TOO_LARGE

    async def test_options_without_a_preflight_is_still_a_405_with_the_methods_of_the_path(
        self, app: FastAPI, client: AsyncClient
    ) -> None:
        res = await client.options(app.url_path_for("users:get-current-user"), headers={"Origin": "https://a.example"})
        assert res.status_code == status.HTTP_405_METHOD_NOT_ALLOWED
        assert "GET" in res.headers["allow"]


class TestKeyRotation:
    async def test_tokens_signed_with_the_previous_key_keep_working_until_they_expire(
        self, db: Database, test_user: UserInDB
    ) -> None:
        old_key, new_key = str(SECRET_KEY), secrets.token_hex(32)
        old_token = await session_token(db, test_user, secret_key=old_key)
        expired_old_token = await session_token(db, test_user, secret_key=old_key, expires_in=-1)

        def me(base_url: str, token: str | None) -> int:
            return httpx.get(f"{base_url}/api/users/me/", headers={"Authorization": f"Bearer {token}"}).status_code

        rotated = {"SECRET_KEY": new_key, "SECRET_KEY_PREVIOUS": old_key}
        with live_server(TEST_DATABASE_URL, env=rotated) as base_url:
            assert me(base_url, old_token) == 200
            assert me(base_url, expired_old_token) == 401
            form = {"username": test_user.email, "password": PASSWORD}
            new_token = httpx.post(f"{base_url}/api/users/login/token/", data=form).json()["access_token"]
            assert me(base_url, new_token) == 200
        # new tokens are signed with the new key only
        jwt.decode(new_token, new_key, algorithms=["HS256"], audience="phresh:auth")
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(new_token, old_key, algorithms=["HS256"], audience="phresh:auth")

        with live_server(TEST_DATABASE_URL, env={"SECRET_KEY": new_key}) as base_url:
            assert me(base_url, old_token) == 401  # once the old key is dropped, so are its tokens
            assert me(base_url, new_token) == 200


class TestNoSecretsInLogs:
    @pytest.mark.parametrize("log_format", ["text", "json"])
    async def test_a_session_logs_no_password_hash_salt_or_token(
        self, app: FastAPI, client: AsyncClient, db: Database, caplog: pytest.LogCaptureFixture, log_format: str
    ) -> None:
        caplog.set_level(logging.DEBUG)  # everything, the database driver's query log included
        password, new_password = "logged-nowhere-1", "logged-nowhere-2"
        res = await client.post(
            app.url_path_for("users:register-new-user"),
            json={"new_user": {"email": "quiet@example.com", "username": "quiet", "password": password}},
        )
        registered_token = res.json()["access_token"]["access_token"]
        refresh_tokens = [res.json()["access_token"]["refresh_token"]]
        await log_in(app, client, "quiet@example.com", "wrong-password")
        login = (await log_in(app, client, "quiet@example.com", password)).json()
        refresh_path = app.url_path_for("users:refresh-access-token")
        for _ in range(2):  # a rotation, then the same token again (the grace window's answer)
            refreshed = (await client.post(refresh_path, json={"refresh_token": login["refresh_token"]})).json()
            refresh_tokens += [login["refresh_token"], refreshed["refresh_token"]]
        token = refreshed["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        await client.get(app.url_path_for("users:list-my-sessions"), headers=headers)
        await client.get(app.url_path_for("users:get-current-user"), headers=headers)
        before = await UsersRepository(db).get_user_by_email(email="quiet@example.com", populate=False)
        res = await client.put(
            app.url_path_for("users:change-password"),
            json={"password_change": {"current_password": password, "new_password": new_password}},
            headers=headers,
        )
        fresh_token = res.json()["access_token"]["access_token"]
        after = await UsersRepository(db).get_user_by_email(email="quiet@example.com", populate=False)
        assert before is not None and after is not None
        await client.post(app.url_path_for("users:logout"), headers={"Authorization": f"Bearer {fresh_token}"})

        # The lines as the format writes them (the access lines' fields, a traceback too), and for
        # JSON also each field's value as a collector reads it back (escaping hides no secret).
        formatter = formatter_for(log_format)
        lines = [formatter.format(record) for record in caplog.records]
        if log_format == "json":
            lines += [" ".join(str(value) for value in json.loads(line).values()) for line in lines]
        logged = "\n".join(lines)
        assert "Query:" in logged  # the driver's DEBUG log was captured: the check below has teeth
        assert "/api/users/me/" in logged  # and the access lines
        for secret in (password, new_password, before.password, before.salt, after.password, after.salt):
            assert secret not in logged
        for secret in (registered_token, token, fresh_token):
            assert secret not in logged
            assert secret.split(".")[2] not in logged  # not even the signature
        for refresh_token in refresh_tokens:
            assert refresh_token not in logged
            stored = hashlib.sha256(refresh_token.encode()).digest()  # nor what is stored of it
            assert stored.hex() not in logged and str(stored)[2:-1] not in logged


class TestSecurityEvents:
    async def test_the_trail_records_who_did_what_and_from_where(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[[UserInDB], AsyncClient],
        db: Database,
        test_superuser: UserInDB,
    ) -> None:
        res = await client.post(app.url_path_for("users:register-new-user"), json=register_body(1))
        user_id = res.json()["id"]
        await log_in(app, client, "user1@example.com", "a-password")
        for _ in range(LOGIN_MAX_FAILURES_PER_ACCOUNT + 1):
            await log_in(app, client, "user1@example.com", "wrong-password")
        user = await UsersRepository(db).get_user_by_id(user_id=user_id, populate=False)
        assert user is not None
        await client_for(user).put(
            app.url_path_for("users:change-password"),
            json={"password_change": {"current_password": "a-password", "new_password": "b-password"}},
        )
        admin = client_for(test_superuser)
        await admin.post(app.url_path_for("users:deactivate-user", user_id=user_id))
        await admin.post(app.url_path_for("users:reactivate-user", user_id=user_id))

        res = await admin.get(app.url_path_for("security-events:list-security-events"), params={"user_id": user_id})
        assert res.status_code == status.HTTP_200_OK
        events = res.json()["events"]
        assert [event["kind"] for event in reversed(events)] == [
            "registration",
            "login_success",
            *["login_failure"] * LOGIN_MAX_FAILURES_PER_ACCOUNT,
            "lockout",
            "password_change",
            "deactivation",
            "reactivation",
        ]
        assert {event["client_address"] for event in events} == {"127.0.0.1"}
        assert all(event["user_id"] == user_id for event in events)
        for secret in ("a-password", "b-password", user.password, user.salt):
            assert secret not in res.text

        res = await admin.get(
            app.url_path_for("security-events:list-security-events"), params={"kind": "lockout", "limit": 1}
        )
        assert res.json()["total"] == 1 and res.json()["events"][0]["kind"] == "lockout"

    async def test_failures_for_unknown_accounts_are_recorded_without_a_user(
        self, app: FastAPI, client: AsyncClient, client_for: Callable[[UserInDB], AsyncClient], test_superuser: UserInDB
    ) -> None:
        await log_in(app, client, "ghost@example.com", "boo")
        res = await client_for(test_superuser).get(
            app.url_path_for("security-events:list-security-events"), params={"kind": "login_failure"}
        )
        assert [(e["user_id"], e["client_address"]) for e in res.json()["events"]] == [(None, "127.0.0.1")]
        assert "ghost" not in res.text  # what was typed as a name may be a misplaced password

    async def test_only_superusers_read_the_trail(
        self, app: FastAPI, client: AsyncClient, authorized_client: AsyncClient
    ) -> None:
        path = app.url_path_for("security-events:list-security-events")
        assert (await authorized_client.get(path)).status_code == status.HTTP_403_FORBIDDEN
        assert (await client.get(path)).status_code == status.HTTP_401_UNAUTHORIZED
