"""Superusers: made from the terminal, they list users and switch accounts off and on."""

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient

from app.core.config import BACKEND_DIR
from app.db.repositories.users import UsersRepository
from app.models.user import UserInDB, UserPublic
from app.services import auth_service
from tests.conftest import TEST_DATABASE_URL, create_user, stored


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": str(TEST_DATABASE_URL), "PHRESH_ENV_FILE": os.devnull}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=BACKEND_DIR,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestCreateSuperuserCommand:
    async def test_creates_a_superuser_who_can_log_in(self, app: FastAPI, client: AsyncClient, db: Database) -> None:
        result = run_cli(
            "create-superuser", "--email", "boss@example.com", "--username", "boss", "--password-stdin",
            stdin="the-boss-password\n",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "created superuser boss <boss@example.com>" in result.stdout
        assert "the-boss-password" not in result.stdout + result.stderr

        user = await UsersRepository(db).get_user_by_email(email="boss@example.com", populate=False)
        assert user is not None and user.is_superuser and user.is_active
        assert auth_service.verify_password(password="the-boss-password", salt=user.salt, hashed_pw=user.password)

        res = await client.post(
            app.url_path_for("users:login-email-and-password"),
            data={"username": "boss@example.com", "password": "the-boss-password"},
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert res.status_code == status.HTTP_200_OK

    async def test_promotes_and_reactivates_an_existing_user_keeping_the_password(
        self, db: Database, test_user: UserPublic
    ) -> None:
        before = await stored(db, test_user)
        await UsersRepository(db).set_user_active(id=test_user.id, is_active=False)
        result = run_cli("create-superuser", "--email", test_user.email, "--username", "ignored")
        assert result.returncode == 0, result.stderr
        assert f"promoted {test_user.username} <{test_user.email}> to superuser" in result.stdout
        user = await stored(db, test_user)
        assert user.is_superuser and user.is_active
        assert (user.password, user.salt) == (before.password, before.salt)

    @pytest.mark.parametrize(
        "email, username, password, complaint",
        (
            ("not-an-email", "boss", "the-boss-password", "email"),
            ("boss@example.com", "b", "the-boss-password", "username"),
            ("boss@example.com", "boss", "short", "password"),
            ("boss@example.com", "lebronjames", "the-boss-password", "the username 'lebronjames' is already taken"),
        ),
    )
    async def test_bad_input_is_one_clear_line_and_creates_nobody(
        self, db: Database, test_user: UserInDB, email: str, username: str, password: str, complaint: str
    ) -> None:
        result = run_cli(
            "create-superuser", "--email", email, "--username", username, "--password-stdin", stdin=password + "\n"
        )
        assert result.returncode == 1
        assert result.stderr.startswith("phresh: ") and complaint in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert await db.fetch_val("SELECT count(*) FROM users") == 1


class TestListUsers:
    async def test_superusers_page_through_all_users(
        self, app: FastAPI, client_for: Callable[[UserInDB], AsyncClient], db: Database, test_superuser: UserInDB
    ) -> None:
        for i in range(5):
            await create_user(db, email=f"user{i}@example.com", username=f"user{i}", password="password123")
        admin = client_for(test_superuser)
        path = app.url_path_for("users:list-users")

        first = await admin.get(path, params={"limit": 4})
        assert first.status_code == status.HTTP_200_OK
        assert (first.json()["total"], first.json()["limit"], first.json()["offset"]) == (6, 4, 0)
        second = await admin.get(path, params={"limit": 4, "offset": 4})
        names = [u["username"] for u in first.json()["users"] + second.json()["users"]]
        assert names == ["phresh_admin", "user0", "user1", "user2", "user3", "user4"]
        for user in first.json()["users"]:
            assert "password" not in user and "salt" not in user

        beyond = await admin.get(path, params={"offset": 100})
        assert beyond.json()["users"] == [] and beyond.json()["total"] == 6

    @pytest.mark.parametrize("params", ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}))
    async def test_bad_paging_is_422(
        self,
        app: FastAPI,
        client_for: Callable[[UserInDB], AsyncClient],
        test_superuser: UserInDB,
        params: dict[str, object],
    ) -> None:
        res = await client_for(test_superuser).get(app.url_path_for("users:list-users"), params=params)
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT

    async def test_others_cannot_list_users(
        self, app: FastAPI, authorized_client: AsyncClient, client: AsyncClient
    ) -> None:
        res = await authorized_client.get(app.url_path_for("users:list-users"))
        assert res.status_code == status.HTTP_403_FORBIDDEN
        assert res.json() == {"detail": "Superuser privileges are required for this action."}
        assert (await client.get(app.url_path_for("users:list-users"))).status_code == status.HTTP_401_UNAUTHORIZED


class TestDeactivation:
    async def test_a_deactivated_user_is_locked_out_until_reactivated(
        self,
        app: FastAPI,
        client_for: Callable[[UserInDB], AsyncClient],
        client: AsyncClient,
        test_user: UserInDB,
        test_superuser: UserInDB,
    ) -> None:
        admin, user = client_for(test_superuser), client_for(test_user)
        login_form = {"username": test_user.email, "password": "heatcavslakers"}
        login_path = app.url_path_for("users:login-email-and-password")
        form = {"Content-Type": "application/x-www-form-urlencoded"}

        res = await admin.post(app.url_path_for("users:deactivate-user", user_id=test_user.id))
        assert res.status_code == status.HTTP_200_OK
        assert res.json()["is_active"] is False
        assert (await user.get(app.url_path_for("users:get-current-user"))).status_code == 401
        assert (await client.post(login_path, data=login_form, headers=form)).status_code == 401

        res = await admin.post(app.url_path_for("users:reactivate-user", user_id=test_user.id))
        assert res.json()["is_active"] is True
        # tokens minted before the deactivation stay dead: the user logs in again
        res = await user.get(app.url_path_for("users:get-current-user"))
        assert (res.status_code, res.json()) == (401, {"detail": "Could not validate token credentials."})
        res = await client.post(login_path, data=login_form, headers=form)
        assert res.status_code == status.HTTP_200_OK
        fresh = {"Authorization": f"Bearer {res.json()['access_token']}"}
        assert (await client.get(app.url_path_for("users:get-current-user"), headers=fresh)).status_code == 200

    @pytest.mark.parametrize("route", ("users:deactivate-user", "users:reactivate-user"))
    async def test_others_cannot_switch_accounts(
        self,
        app: FastAPI,
        client_for: Callable[[UserInDB], AsyncClient],
        db: Database,
        test_user: UserInDB,
        test_user2: UserInDB,
        route: str,
    ) -> None:
        res = await client_for(test_user).post(app.url_path_for(route, user_id=test_user2.id))
        assert res.status_code == status.HTTP_403_FORBIDDEN
        assert await UsersRepository(db).get_user_by_id(user_id=test_user2.id) == test_user2

    @pytest.mark.parametrize("user_id, status_code", ((999, 404), (2**31, 404), (0, 422), ("abc", 422)))
    async def test_unknown_users_are_404_and_bad_ids_422(
        self,
        app: FastAPI,
        client_for: Callable[[UserInDB], AsyncClient],
        test_superuser: UserInDB,
        user_id: object,
        status_code: int,
    ) -> None:
        res = await client_for(test_superuser).post(app.url_path_for("users:deactivate-user", user_id=user_id))
        assert res.status_code == status_code

    async def test_superusers_cannot_lock_themselves_out(
        self, app: FastAPI, client_for: Callable[[UserInDB], AsyncClient], test_superuser: UserInDB
    ) -> None:
        admin = client_for(test_superuser)
        res = await admin.post(app.url_path_for("users:deactivate-user", user_id=test_superuser.id))
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert (await admin.get(app.url_path_for("users:get-current-user"))).status_code == 200
