"""Login, the current user, and the tokens that prove who is asking."""

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import jwt
import pytest
from databases import Database
from fastapi import FastAPI, HTTPException, status
from httpx import AsyncClient, Response

from app.core.config import JWT_ALGORITHM, JWT_AUDIENCE, JWT_TOKEN_PREFIX, SECRET_KEY
from app.db.repositories.users import UsersRepository
from app.models.token import AccessToken
from app.models.user import UserInDB, UserPublic
from app.services import auth_service
from app.services.authentication import AuthException
from tests.conftest import create_user, session_token, stored

LOGIN_FAILED = {"detail": "Authentication was unsuccessful."}


async def login(app: FastAPI, client: AsyncClient, **form: str) -> Response:
    return await client.post(
        app.url_path_for("users:login-email-and-password"),
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def claims(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "iss": "phresh.io",
        "aud": JWT_AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "sub": "lebron@james.io",
        "username": "lebronjames",
        "uid": 1,
        "ver": 0,
        "jti": uuid4().hex,
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class TestUserLogin:
    async def test_user_can_login_successfully_and_receives_valid_token(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB
    ) -> None:
        res = await login(app, client, username=test_user.email, password="heatcavslakers")
        assert res.status_code == status.HTTP_200_OK
        token = AccessToken(**res.json())
        assert token.token_type == "bearer"
        decoded = jwt.decode(token.access_token, str(SECRET_KEY), audience=JWT_AUDIENCE, algorithms=[JWT_ALGORITHM])
        # the tutorial's claims, and the id the server goes by
        assert (decoded["sub"], decoded["username"], decoded["uid"]) == (
            test_user.email,
            test_user.username,
            test_user.id,
        )

        me = await client.get(
            app.url_path_for("users:get-current-user"),
            headers={"Authorization": f"{JWT_TOKEN_PREFIX} {token.access_token}"},
        )
        assert me.status_code == status.HTTP_200_OK
        assert me.json()["username"] == test_user.username

    @pytest.mark.parametrize("login_as", ("LEBRON@JAMES.IO", "LeBron@James.io", "lebronjames"))
    async def test_email_matches_whatever_its_case_and_the_username_works_too(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB, login_as: str
    ) -> None:
        res = await login(app, client, username=login_as, password="heatcavslakers")
        assert res.status_code == status.HTTP_200_OK

    @pytest.mark.parametrize(
        "credential, wrong_value",
        (
            ("email", "wrong@email.com"),
            ("email", "not-an-email@"),
            ("email", ""),
            ("email", None),
            ("email", "x" * 400 + "@example.com"),
            ("email", "nul\x00@example.com"),
            ("password", "wrongpassword"),
            ("password", "HEATCAVSLAKERS"),
            ("password", ""),
            ("password", None),
            ("password", "x" * 10_000),
        ),
    )
    async def test_user_with_wrong_creds_doesnt_receive_token(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB, credential: str, wrong_value: str | None
    ) -> None:
        form = {"username": test_user.email, "password": "heatcavslakers"}
        if wrong_value is None:
            del form["username" if credential == "email" else "password"]
        else:
            form["username" if credential == "email" else "password"] = wrong_value
        res = await login(app, client, **form)
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.json() == LOGIN_FAILED
        assert res.headers["WWW-Authenticate"] == "Bearer"
        assert "access_token" not in res.text

    async def test_an_empty_body_is_a_failed_login_not_a_malformed_request(
        self, app: FastAPI, client: AsyncClient
    ) -> None:
        res = await client.post(app.url_path_for("users:login-email-and-password"))
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.json() == LOGIN_FAILED

    async def test_unknown_user_and_wrong_password_answer_identically(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB
    ) -> None:
        unknown = await login(app, client, username="nobody@example.com", password="heatcavslakers")
        wrong = await login(app, client, username=test_user.email, password="not-the-password")
        assert (unknown.status_code, unknown.json(), unknown.headers["WWW-Authenticate"]) == (
            wrong.status_code,
            wrong.json(),
            wrong.headers["WWW-Authenticate"],
        )

    def test_an_unknown_user_still_costs_a_password_check(self) -> None:
        # The dummy hash is a real bcrypt hash at the configured cost, so verifying against it
        # costs what a real user's check costs; and it can never succeed.
        assert auth_service._dummy_hash.startswith("$bcrypt-sha256$") and ",r=4$" in auth_service._dummy_hash
        assert auth_service.verify_nothing(password="no such user") is False


class TestAuthTokens:
    async def test_can_retrieve_username_from_token(self, test_user: UserInDB) -> None:
        token = auth_service.create_access_token_for_user(user=test_user, secret_key=str(SECRET_KEY))
        username = auth_service.get_username_from_token(token=token, secret_key=str(SECRET_KEY))
        assert username == test_user.username

    @pytest.mark.parametrize(
        "secret, wrong_token",
        (
            (SECRET_KEY, "asdf"),
            (SECRET_KEY, ""),
            (SECRET_KEY, None),
            ("ABC123", "use correct token"),
        ),
    )
    async def test_error_when_token_or_secret_is_wrong(
        self, test_user: UserInDB, secret: object, wrong_token: str | None
    ) -> None:
        token = auth_service.create_access_token_for_user(user=test_user, secret_key=str(SECRET_KEY))
        if wrong_token == "use correct token":
            wrong_token = token
        # the tutorial's contract: FastAPI's 401, ready to propagate from a dependency
        with pytest.raises(HTTPException) as raised:
            auth_service.get_username_from_token(token=wrong_token, secret_key=str(secret))
        assert raised.value.status_code == status.HTTP_401_UNAUTHORIZED
        assert raised.value.detail == "Could not validate token credentials."
        assert raised.value.headers == {"WWW-Authenticate": "Bearer"}


class TestForgedTokens:
    """Every way people try to get in with a token we did not mint is a 401."""

    @pytest.fixture
    async def valid_claims(self, db: Database, test_user: UserInDB) -> Callable[..., dict[str, object]]:
        sid = auth_service.decode_access_token(token=await session_token(db, test_user)).sid
        return lambda **overrides: claims(
            **{
                "sub": test_user.email,
                "username": test_user.username,
                "uid": test_user.id,
                "sid": str(sid),
                **overrides,
            }
        )

    async def me(self, app: FastAPI, client: AsyncClient, token: str) -> Response:
        return await client.get(
            app.url_path_for("users:get-current-user"), headers={"Authorization": f"Bearer {token}"}
        )

    async def test_a_clock_a_few_seconds_ahead_is_tolerated(
        self, app: FastAPI, client: AsyncClient, valid_claims: Callable[..., dict[str, object]]
    ) -> None:
        iat = int((datetime.now(UTC) + timedelta(seconds=5)).timestamp())  # within JWT_LEEWAY_SECONDS
        token = jwt.encode(valid_claims(iat=iat), str(SECRET_KEY), algorithm="HS256")
        assert (await self.me(app, client, token)).status_code == status.HTTP_200_OK

    def test_every_token_carries_its_own_id(self, test_user: UserInDB) -> None:
        tokens = [auth_service.create_access_token_for_user(user=test_user) for _ in range(3)]
        ids = {auth_service.decode_access_token(token=token).jti for token in tokens}
        assert len(ids) == 3

    async def test_a_token_made_here_works(
        self, app: FastAPI, client: AsyncClient, valid_claims: Callable[..., dict[str, object]]
    ) -> None:
        # the baseline for the forgeries below: the same claims, correctly signed, are accepted
        token = jwt.encode(valid_claims(), str(SECRET_KEY), algorithm="HS256")
        assert (await self.me(app, client, token)).status_code == status.HTTP_200_OK

    @pytest.mark.parametrize(
        "forgery",
        (
            "wrong key",
            "alg none",
            "HS512 with the right key",
            "wrong audience",
            "wrong issuer",
            "no audience",
            "no issuer",
            "no expiry",
            "no issued-at",
            "expired",
            "tampered payload",
            "tampered signature",
            "unknown user",
            "user id beyond any integer",
            "not a user id",
            "no user id",
            "no token version",
            "no token id",
            "issued in the future",
            "garbage",
        ),
    )
    async def test_forged_tokens_are_refused(
        self,
        app: FastAPI,
        client: AsyncClient,
        valid_claims: Callable[..., dict[str, object]],
        forgery: str,
    ) -> None:
        key = str(SECRET_KEY)
        sign = lambda **overrides: jwt.encode(valid_claims(**overrides), key, algorithm="HS256")  # noqa: E731
        past = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
        good = sign()
        header, payload, signature = good.split(".")
        token = {
            "wrong key": lambda: jwt.encode(valid_claims(), "another-key-of-at-least-32-bytes!!", algorithm="HS256"),
            "alg none": lambda: f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(valid_claims())}.",
            "HS512 with the right key": lambda: jwt.encode(valid_claims(), key, algorithm="HS512"),
            "wrong audience": lambda: sign(aud="othersite:auth"),
            "wrong issuer": lambda: sign(iss="evil.example"),
            "no audience": lambda: jwt.encode({**valid_claims(), "aud": None}, key, algorithm="HS256"),
            "no issuer": lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "iss"}, key),
            "no expiry": lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "exp"}, key),
            "no issued-at": lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "iat"}, key),
            "expired": lambda: sign(exp=past),
            "tampered payload": lambda: f"{header}.{b64(valid_claims(uid=2))}.{signature}",
            "tampered signature": lambda: f"{header}.{payload}.{signature[:-4]}AAAA",
            "unknown user": lambda: sign(uid=999999),
            "user id beyond any integer": lambda: sign(uid=99999999999999),
            "not a user id": lambda: sign(uid="lebron@james.io"),
            "no user id": lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "uid"}, key),
            "no token version": lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "ver"}, key),
            "no token id": lambda: jwt.encode({k: v for k, v in valid_claims().items() if k != "jti"}, key),
            "issued in the future": lambda: sign(iat=int((datetime.now(UTC) + timedelta(minutes=1)).timestamp())),
            "garbage": lambda: "not.a.token",
        }[forgery]()
        res = await self.me(app, client, token)
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.headers["WWW-Authenticate"] == "Bearer"
        expected = "No authenticated user." if forgery == "unknown user" else None
        assert res.json()["detail"] == (expected or "Could not validate token credentials.")


class TestUserMe:
    async def test_authenticated_user_can_retrieve_own_data(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user: UserPublic
    ) -> None:
        res = await authorized_client.get(app.url_path_for("users:get-current-user"))
        assert res.status_code == status.HTTP_200_OK
        user = UserPublic(**res.json())
        assert user.email == test_user.email
        assert user.username == test_user.username
        assert user.id == test_user.id
        for secret in ("password", "salt", "token_version"):
            assert secret not in res.json()
        in_db = await stored(db, test_user)
        assert in_db.password not in res.text and in_db.salt not in res.text
        # with the profile every user has (Part 9)
        assert user.profile is not None and user.profile.user_id == test_user.id
        assert user.access_token is None

    async def test_user_cannot_access_own_data_if_not_authenticated(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.get(app.url_path_for("users:get-current-user"))
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.headers["WWW-Authenticate"] == "Bearer"

    @pytest.mark.parametrize("jwt_prefix", ("", "value", "Token", "JWT", "Swearer"))
    async def test_user_cannot_access_own_data_with_incorrect_jwt_prefix(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB, jwt_prefix: str
    ) -> None:
        token = auth_service.create_access_token_for_user(user=test_user, secret_key=str(SECRET_KEY))
        res = await client.get(
            app.url_path_for("users:get-current-user"), headers={"Authorization": f"{jwt_prefix} {token}"}
        )
        assert res.status_code == status.HTTP_401_UNAUTHORIZED

    async def test_a_deleted_users_token_names_no_user(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user: UserInDB
    ) -> None:
        assert (await authorized_client.get(app.url_path_for("users:get-current-user"))).status_code == 200
        await db.execute("DELETE FROM users WHERE id = :id", values={"id": test_user.id})
        res = await authorized_client.get(app.url_path_for("users:get-current-user"))
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.json() == {"detail": "No authenticated user."}

    async def test_a_deactivated_users_token_stops_working(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user: UserInDB
    ) -> None:
        await UsersRepository(db).set_user_active(id=test_user.id, is_active=False)
        res = await authorized_client.get(app.url_path_for("users:get-current-user"))
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.json() == {"detail": "Not an active user."}
        assert res.headers["WWW-Authenticate"] == "Bearer"

    async def test_a_deactivated_user_cannot_log_in(
        self, app: FastAPI, client: AsyncClient, db: Database, test_user: UserInDB
    ) -> None:
        await UsersRepository(db).set_user_active(id=test_user.id, is_active=False)
        res = await login(app, client, username=test_user.email, password="heatcavslakers")
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.json() == {"detail": "Not an active user."}
        # ... but that is said only to whoever knows the password
        res = await login(app, client, username=test_user.email, password="guessing")
        assert res.json() == LOGIN_FAILED

    async def test_a_second_users_token_reads_the_second_user(
        self, app: FastAPI, client_for: Callable[[UserInDB], AsyncClient], db: Database, test_user: UserInDB
    ) -> None:
        other = await create_user(db, email="other@example.com", username="other", password="other-pass")
        res = await client_for(other).get(app.url_path_for("users:get-current-user"))
        assert res.json()["username"] == "other"


class TestNoSecretsInResponses:
    async def test_no_route_returns_a_password_salt_or_hash(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[[UserInDB], AsyncClient],
        db: Database,
        test_superuser: UserInDB,
    ) -> None:
        password = "visible-only-to-me"
        res = await client.post(
            app.url_path_for("users:register-new-user"),
            json={"new_user": {"email": "private@example.com", "username": "private", "password": password}},
        )
        responses = [res]
        user = await UsersRepository(db).get_user_by_email(email="private@example.com", populate=False)
        assert user is not None
        me = client_for(user)
        admin = client_for(test_superuser)
        responses += [
            await login(app, client, username="private@example.com", password=password),
            await me.get(app.url_path_for("users:get-current-user")),
            await me.put(app.url_path_for("users:update-current-user"), json={"user_update": {"username": "private2"}}),
            await me.put(
                app.url_path_for("users:change-password"),
                json={"password_change": {"current_password": password, "new_password": "another-secret"}},
            ),
            await admin.get(app.url_path_for("users:list-users")),
            await admin.post(app.url_path_for("users:deactivate-user", user_id=user.id)),
            await admin.post(app.url_path_for("users:reactivate-user", user_id=user.id)),
        ]
        changed = await UsersRepository(db).get_user_by_id(user_id=user.id, populate=False)
        assert changed is not None
        secrets = [password, "another-secret", user.password, user.salt, changed.password, changed.salt]
        for res in responses:
            assert res.status_code < 300, res.text
            for secret in secrets:
                assert secret not in res.text
            assert '"password"' not in res.text and '"salt"' not in res.text


class TestVerifiedTokenCache:
    async def test_a_remembered_token_is_refused_once_it_expires(self, test_user: UserInDB) -> None:
        token = auth_service.create_access_token_for_user(user=test_user)
        claims = auth_service.decode_access_token(token=token)  # verified, and remembered
        assert auth_service.decode_access_token(token=token) == claims
        # as the clock passing exp (and the leeway) would do:
        cache_key = next(key for key in auth_service._verified if key[0] == token)
        auth_service._verified[cache_key] = claims.model_copy(update={"exp": int(time.time()) - 3600})
        with pytest.raises(AuthException):
            auth_service.decode_access_token(token=token)

    async def test_a_remembered_token_is_not_valid_under_another_key(self, test_user: UserInDB) -> None:
        token = auth_service.create_access_token_for_user(user=test_user)
        auth_service.decode_access_token(token=token)
        with pytest.raises(AuthException):
            auth_service.decode_access_token(token=token, secret_key="another-key-of-at-least-32-bytes!!")
