import asyncio
import re
import subprocess
import sys
import time
from datetime import UTC, datetime

import jwt
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient
from pydantic import ValidationError
from starlette.datastructures import Secret

from app.api.routes.users import EMAIL_TAKEN, USERNAME_TAKEN
from app.core.config import ACCESS_TOKEN_EXPIRE_MINUTES, BACKEND_DIR, JWT_ALGORITHM, JWT_AUDIENCE, SECRET_KEY
from app.db.repositories.users import UsersRepository
from app.models.token import JWTMeta
from app.models.user import UserInDB, UserPublic
from app.services import auth_service


def decode(token: str) -> dict[str, object]:
    return jwt.decode(token, str(SECRET_KEY), audience=JWT_AUDIENCE, algorithms=[JWT_ALGORITHM])


async def register(app: FastAPI, client: AsyncClient, **new_user: str) -> "object":
    return await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})


class TestUserRegistration:
    async def test_users_can_register_successfully(self, app: FastAPI, client: AsyncClient, db: Database) -> None:
        user_repo = UsersRepository(db)
        new_user = {"email": "shakira@shakira.io", "username": "shakirashakira", "password": "chantaje"}
        assert await user_repo.get_user_by_email(email=new_user["email"]) is None

        res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
        assert res.status_code == status.HTTP_201_CREATED

        user_in_db = await user_repo.get_user_by_email(email=new_user["email"], populate=False)
        assert user_in_db is not None
        assert user_in_db.email == new_user["email"]
        assert user_in_db.username == new_user["username"]
        # the response is the stored user, minus the secrets, plus a bearer token for it ...
        created_user = UserPublic(**res.json())
        assert created_user.model_dump(exclude={"access_token", "profile"}) == user_in_db.model_dump(
            exclude={"password", "salt"}
        )
        # ... and the empty profile made with it (Part 9)
        assert created_user.profile is not None
        assert created_user.profile.user_id == created_user.id
        assert created_user.profile.model_dump(include={"full_name", "phone_number", "bio", "image"}) == dict.fromkeys(
            ("full_name", "phone_number", "bio", "image")
        )
        assert created_user.access_token is not None
        assert created_user.access_token.token_type == "bearer"
        assert decode(created_user.access_token.access_token)["username"] == new_user["username"]

    async def test_new_users_get_the_default_flags(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.post(
            app.url_path_for("users:register-new-user"),
            json={"new_user": {"email": "a@example.com", "username": "ana", "password": "password1"}},
        )
        body = res.json()
        assert (body["email_verified"], body["is_active"], body["is_superuser"]) == (False, True, False)
        assert body["created_at"] is not None and body["updated_at"] is not None

    @pytest.mark.parametrize(
        "attr, value, detail",
        (
            ("email", "lebron@james.io", EMAIL_TAKEN),
            ("username", "lebronjames", USERNAME_TAKEN),
        ),
    )
    async def test_user_registration_fails_when_credentials_are_taken(
        self, app: FastAPI, client: AsyncClient, test_user: UserInDB, attr: str, value: str, detail: str
    ) -> None:
        new_user = {"email": "nottaken@email.io", "username": "not_taken_username", "password": "freepassword"}
        new_user[attr] = value
        res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": detail}

    @pytest.mark.parametrize(
        "attr, value",
        (
            ("email", "invalid_email@one@two.io"),
            ("email", "no-at-sign"),
            ("email", ""),
            ("password", "short"),
            ("password", "x" * 101),
            ("password", "nul\u0000byte"),
            ("username", "shakira@#$%^<>"),
            ("username", "ab"),
            ("username", "trailing newline\n"),
            ("username", "u" * 33),
            ("username", None),
        ),
    )
    async def test_user_registration_fails_with_invalid_input(
        self, app: FastAPI, client: AsyncClient, db: Database, attr: str, value: str | None
    ) -> None:
        new_user: dict[str, str | None] = {
            "email": "nottaken@email.io",
            "username": "not_taken",
            "password": "a-good-one",
        }
        new_user[attr] = value
        res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert res.json()["detail"][0]["loc"][-1] == attr
        assert await UsersRepository(db).get_user_by_email(email="nottaken@email.io") is None

    async def test_a_rejected_password_is_not_echoed_back(self, app: FastAPI, client: AsyncClient) -> None:
        new_user = {"email": "echo@example.com", "username": "echo", "password": "tiny"}
        res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert "tiny" not in res.text

    async def test_users_saved_password_is_hashed_and_has_salt(
        self, app: FastAPI, client: AsyncClient, db: Database
    ) -> None:
        new_user = {"email": "beyonce@knowles.io", "username": "queenbey", "password": "destinyschild"}
        res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
        assert res.status_code == status.HTTP_201_CREATED

        user_in_db = await UsersRepository(db).get_user_by_email(email=new_user["email"], populate=False)
        assert user_in_db is not None
        assert user_in_db.salt is not None and user_in_db.salt != "123"
        assert user_in_db.password != new_user["password"]
        assert new_user["password"] not in user_in_db.password
        assert auth_service.verify_password(
            password=new_user["password"], salt=user_in_db.salt, hashed_pw=user_in_db.password
        )
        assert not auth_service.verify_password(
            password="destinyschilD", salt=user_in_db.salt, hashed_pw=user_in_db.password
        )

    async def test_response_never_contains_the_password_hash_or_salt(
        self, app: FastAPI, client: AsyncClient, db: Database
    ) -> None:
        new_user = {"email": "secret@example.com", "username": "secretive", "password": "my-secret-pass"}
        res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
        assert res.status_code == status.HTTP_201_CREATED
        user_in_db = await UsersRepository(db).get_user_by_email(email=new_user["email"], populate=False)
        assert user_in_db is not None
        assert "password" not in res.json() and "salt" not in res.json()
        for secret in (new_user["password"], user_in_db.password, user_in_db.salt):
            assert secret not in res.text

    @pytest.mark.parametrize(
        "second_user, detail",
        (
            ({"email": "race@example.com", "username": "racer_two"}, EMAIL_TAKEN),
            ({"email": "other@example.com", "username": "racer_one"}, USERNAME_TAKEN),
        ),
    )
    async def test_racing_registrations_of_one_name_end_in_one_201_and_one_400(
        self, app: FastAPI, client: AsyncClient, db: Database, second_user: dict[str, str], detail: str
    ) -> None:
        first = {"email": "race@example.com", "username": "racer_one", "password": "ready-set-go"}
        second = {**first, **second_user}
        # Both pass the "is it taken?" lookups before either inserts (hashing runs in a thread
        # and yields the event loop), so it is the unique index that has to settle it.
        responses = await asyncio.gather(
            *(
                client.post(app.url_path_for("users:register-new-user"), json={"new_user": user})
                for user in (first, second, first, second)
            )
        )
        codes = sorted(res.status_code for res in responses)
        assert codes == [201, 400, 400, 400]
        for res in responses:
            if res.status_code == 400:
                assert res.json()["detail"] in (EMAIL_TAKEN, USERNAME_TAKEN)
        assert any(res.json() == {"detail": detail} for res in responses)
        count = await db.fetch_val("SELECT count(*) FROM users")
        assert count == 1


class TestPasswordHashing:
    async def test_passwords_longer_than_bcrypts_72_bytes_register_and_verify(
        self, app: FastAPI, client: AsyncClient, db: Database
    ) -> None:
        # 100 characters of 4 bytes each: 400 bytes, plus the 29-character salt
        password = "\U0001f9f9" * 100
        new_user = {"email": "long@example.com", "username": "longpass", "password": password}
        res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
        assert res.status_code == status.HTTP_201_CREATED
        user = await UsersRepository(db).get_user_by_email(email="long@example.com", populate=False)
        assert user is not None
        assert auth_service.verify_password(password=password, salt=user.salt, hashed_pw=user.password)

    def test_passwords_that_differ_only_after_byte_72_do_not_verify_as_each_other(self) -> None:
        common = "p" * 80
        salt = auth_service.generate_salt()
        hashed = auth_service.hash_password(password=common + "-one", salt=salt)
        assert auth_service.verify_password(password=common + "-one", salt=salt, hashed_pw=hashed)
        assert not auth_service.verify_password(password=common + "-two", salt=salt, hashed_pw=hashed)
        assert not auth_service.verify_password(password=common, salt=salt, hashed_pw=hashed)

    def test_the_salt_takes_part_in_the_hash(self) -> None:
        salt = auth_service.generate_salt()
        hashed = auth_service.hash_password(password="password", salt=salt)
        assert not auth_service.verify_password(
            password="password", salt=auth_service.generate_salt(), hashed_pw=hashed
        )

    def test_the_same_password_hashes_differently_every_time(self) -> None:
        update_one = auth_service.create_salt_and_hashed_password(plaintext_password="password")
        update_two = auth_service.create_salt_and_hashed_password(plaintext_password="password")
        assert update_one.salt != update_two.salt
        assert update_one.password != update_two.password

    def test_hashes_use_the_configured_bcrypt_cost(self) -> None:
        hashed = auth_service.hash_password(password="password", salt=auth_service.generate_salt())
        # the suite runs with BCRYPT_ROUNDS=4 (see conftest.py)
        assert "$bcrypt-sha256$" in hashed and ",r=4$" in hashed


class TestAuthTokens:
    async def test_can_create_access_token_successfully(self, test_user: UserPublic) -> None:
        before = int(datetime.now(UTC).timestamp())
        access_token = auth_service.create_access_token_for_user(
            user=test_user,
            secret_key=str(SECRET_KEY),
            audience=JWT_AUDIENCE,
            expires_in=ACCESS_TOKEN_EXPIRE_MINUTES,
        )
        assert access_token is not None
        creds = decode(access_token)
        assert creds["username"] == test_user.username
        assert creds["sub"] == test_user.email  # the tutorial's subject: the email
        assert creds["uid"] == test_user.id  # what the server goes by: it survives email and username changes
        assert creds["ver"] == test_user.token_version == 0
        assert creds["aud"] == JWT_AUDIENCE
        assert creds["iss"] == "phresh.io"
        assert jwt.get_unverified_header(access_token)["alg"] == "HS256"
        iat, exp = creds["iat"], creds["exp"]
        assert isinstance(iat, int) and isinstance(exp, int)
        assert before <= iat <= before + 5
        assert exp - iat == ACCESS_TOKEN_EXPIRE_MINUTES * 60 == 60 * 60  # an hour (the tutorial's: a week)

    async def test_expires_in_sets_the_lifetime(self, test_user: UserInDB) -> None:
        token = auth_service.create_access_token_for_user(user=test_user, expires_in=1)
        assert token is not None
        creds = decode(token)
        assert int(str(creds["exp"])) - int(str(creds["iat"])) == 60

    async def test_an_expired_token_does_not_decode(self, test_user: UserInDB) -> None:
        token = auth_service.create_access_token_for_user(user=test_user, expires_in=-1)
        assert token is not None
        with pytest.raises(jwt.ExpiredSignatureError):
            decode(token)

    def test_token_times_are_taken_when_minting_not_at_import(self) -> None:
        first = JWTMeta()
        time.sleep(1.1)
        second = JWTMeta()
        assert second.iat > first.iat
        assert second.exp > first.exp

    async def test_token_missing_user_is_invalid(self) -> None:
        access_token = auth_service.create_access_token_for_user(
            user=None,
            secret_key=str(SECRET_KEY),
            audience=JWT_AUDIENCE,
            expires_in=ACCESS_TOKEN_EXPIRE_MINUTES,
        )
        assert access_token is None
        with pytest.raises(jwt.PyJWTError):
            jwt.decode(access_token, str(SECRET_KEY), audience=JWT_AUDIENCE, algorithms=[JWT_ALGORITHM])  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "secret_key, jwt_audience, exception",
        (
            ("wrong-secret", JWT_AUDIENCE, jwt.InvalidSignatureError),
            (None, JWT_AUDIENCE, jwt.InvalidSignatureError),
            (SECRET_KEY, "othersite:auth", jwt.InvalidAudienceError),
            (SECRET_KEY, None, ValidationError),
        ),
    )
    async def test_invalid_token_content_raises_error(
        self,
        test_user: UserInDB,
        secret_key: str | Secret | None,
        jwt_audience: str | None,
        exception: type[BaseException],
    ) -> None:
        with pytest.raises(exception):  # noqa: PT012 - a bad audience fails at minting, a bad key at decoding
            access_token = auth_service.create_access_token_for_user(
                user=test_user,
                secret_key=str(secret_key),
                audience=jwt_audience,  # type: ignore[arg-type]
                expires_in=ACCESS_TOKEN_EXPIRE_MINUTES,
            )
            jwt.decode(access_token, str(SECRET_KEY), audience=JWT_AUDIENCE, algorithms=[JWT_ALGORITHM])  # type: ignore[arg-type]


class TestEmailsTheSchemaAndTheServerAgreeOn:
    """The OpenAPI document says what the server accepts: clients (and fuzzers) can rely on it."""

    @pytest.mark.parametrize(
        "email, accepted",
        (
            ("a@b.test", False),
            ("a@B.TEST", False),
            ("someone@printer.local", False),
            ("me@localhost", False),
            ("x@y.invalid", False),
            ("x@hidden.onion", False),
            ("x@in-addr.arpa", False),
            ("person@example.com", True),
            ("tester@test.com", True),
            ("x@localhost.example.com", True),
        ),
    )
    async def test_special_use_domains_are_refused_by_both(
        self, app: FastAPI, client: AsyncClient, email: str, accepted: bool
    ) -> None:
        schema = app.openapi()["components"]["schemas"]["UserCreate"]["properties"]["email"]
        assert schema["format"] == "email"
        assert bool(re.search(schema["pattern"], email)) is accepted
        res = await register(app, client, email=email, username="someone", password="a-password")
        assert res.status_code == (status.HTTP_201_CREATED if accepted else status.HTTP_422_UNPROCESSABLE_CONTENT)


class TestAccountsTheMigrationsRenamed:
    async def test_a_user_whose_email_was_set_aside_still_reads_their_account_and_profile(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user: UserInDB
    ) -> None:
        # A duplicate email gets an unroutable `.invalid` address (revision b3d9f15e6a72); the
        # models must not refuse to show it back to its user.
        email = f"duplicate-{test_user.id}@phresh.invalid"
        await db.execute("UPDATE users SET email = :email WHERE id = :id", values={"email": email, "id": test_user.id})
        res = await authorized_client.get(app.url_path_for("users:get-current-user"))
        assert res.status_code == status.HTTP_200_OK
        assert res.json()["email"] == email
        res = await authorized_client.get(
            app.url_path_for("profiles:get-profile-by-username", username=test_user.username)
        )
        assert (res.status_code, res.json()["email"]) == (status.HTTP_200_OK, email)


class TestTheTestingSwitch:
    def test_testing_selects_the_test_database(self, env_without_database: dict[str, str]) -> None:
        # As in the tutorial: TESTING=1 appends _test to the configured database's name.
        env = {**env_without_database, "DATABASE_URL": "postgresql://u@127.0.0.1:5432/phresh?sslmode=disable"}
        code = "from app.core.config import DATABASE_URL; print(DATABASE_URL)"
        for testing, expected in (("1", "/phresh_test?sslmode=disable"), ("0", "/phresh?sslmode=disable")):
            result = subprocess.run(
                [sys.executable, "-c", code],
                env={**env, "TESTING": testing},
                cwd=BACKEND_DIR,
                capture_output=True,
                text=True,
                check=True,
            )
            assert result.stdout.strip().endswith(expected)
