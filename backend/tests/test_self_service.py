"""What users change about their own accounts: email, username, password."""

import asyncio
from collections.abc import Callable

import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient, Response

from app.api.routes.users import EMAIL_TAKEN, USERNAME_TAKEN
from app.core.config import SECRET_KEY
from app.db.repositories.users import UsersRepository
from app.models.user import UserInDB, UserPublic
from app.services import auth_service
from tests.conftest import create_user, log_in, stored


async def update_me(app: FastAPI, client: AsyncClient, **changes: object) -> Response:
    return await client.put(app.url_path_for("users:update-current-user"), json={"user_update": changes})


async def change_password(app: FastAPI, client: AsyncClient, current: str, new: str) -> Response:
    return await client.put(
        app.url_path_for("users:change-password"),
        json={"password_change": {"current_password": current, "new_password": new}},
    )


class TestUpdateMe:
    @pytest.mark.parametrize(
        "changes",
        (
            {"email": "king@james.io"},
            {"username": "kingjames"},
            {"email": "king@james.io", "username": "kingjames"},
            {},
        ),
    )
    async def test_users_can_change_their_email_and_username(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_user: UserPublic,
        changes: dict[str, str],
    ) -> None:
        before = await stored(db, test_user)
        res = await update_me(app, authorized_client, **changes)
        assert res.status_code == status.HTTP_200_OK
        expected = {"email": test_user.email, "username": test_user.username, **changes}
        assert {k: res.json()[k] for k in expected} == expected
        after = await stored(db, test_user)
        assert (after.email, after.username) == (expected["email"], expected["username"])
        assert (after.password, after.salt) == (before.password, before.salt)
        # the profile comes along, under the new names
        profile = res.json()["profile"]
        assert (profile["user_id"], profile["username"], profile["email"]) == (
            test_user.id,
            after.username,
            after.email,
        )

    async def test_tokens_keep_working_after_the_email_and_username_change(
        self, app: FastAPI, authorized_client: AsyncClient, client: AsyncClient
    ) -> None:
        res = await update_me(app, authorized_client, email="king@james.io", username="kingjames")
        assert res.status_code == status.HTTP_200_OK
        me = await authorized_client.get(app.url_path_for("users:get-current-user"))
        assert me.status_code == status.HTTP_200_OK
        assert me.json()["username"] == "kingjames"
        # and the new email logs in, with the same password
        assert (await log_in(app, client, "king@james.io", "heatcavslakers")).status_code == status.HTTP_200_OK
        assert (await log_in(app, client, "lebron@james.io", "heatcavslakers")).status_code == 401

    async def test_a_new_email_is_not_verified(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user: UserInDB
    ) -> None:
        await db.execute("UPDATE users SET email_verified = true WHERE id = :id", values={"id": test_user.id})
        res = await update_me(app, authorized_client, username="still_verified")
        assert res.json()["email_verified"] is True
        res = await update_me(app, authorized_client, email="new@james.io")
        assert res.json()["email_verified"] is False

    @pytest.mark.parametrize(
        "changes, detail",
        (
            ({"email": "serena@williams.io"}, EMAIL_TAKEN),
            ({"username": "serenawilliams"}, USERNAME_TAKEN),
        ),
    )
    async def test_taken_names_are_refused(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_user: UserInDB,
        test_user2: UserInDB,
        changes: dict[str, str],
        detail: str,
    ) -> None:
        res = await update_me(app, authorized_client, **changes)
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": detail}
        assert await UsersRepository(db).get_user_by_id(user_id=test_user.id) == test_user

    async def test_keeping_ones_own_name_is_not_taken(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        res = await update_me(app, authorized_client, email="lebron@james.io", username="lebronjames")
        assert res.status_code == status.HTTP_200_OK

    @pytest.mark.parametrize(
        "changes",
        (
            {"email": "not-an-email"},
            {"email": None},
            {"username": "a"},
            {"username": "spaces are not allowed"},
            {"username": None},
        ),
    )
    async def test_invalid_changes_are_422(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_user: UserInDB,
        changes: dict[str, object],
    ) -> None:
        res = await update_me(app, authorized_client, **changes)
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert await UsersRepository(db).get_user_by_id(user_id=test_user.id) == test_user

    async def test_racing_renames_to_one_name_end_in_one_200_and_400s(
        self, app: FastAPI, client_for: Callable[[UserInDB], AsyncClient], db: Database
    ) -> None:
        users = [
            await create_user(db, email=f"racer{i}@example.com", username=f"racer{i}", password="ready-set-go")
            for i in range(4)
        ]
        responses = await asyncio.gather(*(update_me(app, client_for(user), username="the_one") for user in users))
        assert sorted(res.status_code for res in responses) == [200, 400, 400, 400]
        assert {res.json()["detail"] for res in responses if res.status_code == 400} == {USERNAME_TAKEN}
        assert await db.fetch_val("SELECT count(*) FROM users WHERE username = 'the_one'") == 1

    async def test_anonymous_callers_cannot_update(self, app: FastAPI, client: AsyncClient) -> None:
        res = await update_me(app, client, username="whoever")
        assert res.status_code == status.HTTP_401_UNAUTHORIZED


class TestChangePassword:
    async def test_the_password_changes_and_the_answer_carries_a_fresh_token(
        self, app: FastAPI, authorized_client: AsyncClient, client: AsyncClient, db: Database, test_user: UserPublic
    ) -> None:
        before = await stored(db, test_user)
        res = await change_password(app, authorized_client, "heatcavslakers", "a-brand-new-one")
        assert res.status_code == status.HTTP_200_OK
        for secret in ("password", "salt"):
            assert secret not in res.json()
        fresh_token = res.json()["access_token"]["access_token"]

        after = await stored(db, test_user)
        assert after.salt != before.salt
        assert auth_service.verify_password(password="a-brand-new-one", salt=after.salt, hashed_pw=after.password)

        assert (await log_in(app, client, test_user.email, "heatcavslakers")).status_code == 401
        assert (await log_in(app, client, test_user.email, "a-brand-new-one")).status_code == 200
        me = await client.get(
            app.url_path_for("users:get-current-user"), headers={"Authorization": f"Bearer {fresh_token}"}
        )
        assert me.status_code == status.HTTP_200_OK

    async def test_every_token_issued_before_the_change_is_rejected(
        self, app: FastAPI, authorized_client: AsyncClient, client: AsyncClient, test_user: UserInDB
    ) -> None:
        other_session = (await log_in(app, client, test_user.email, "heatcavslakers")).json()["access_token"]
        minted = auth_service.create_access_token_for_user(user=test_user, secret_key=str(SECRET_KEY))
        res = await change_password(app, authorized_client, "heatcavslakers", "a-brand-new-one")
        assert res.status_code == status.HTTP_200_OK

        refusals = {
            other_session: "This session has ended. Log in again.",  # every other session ends
            minted: "Could not validate token credentials.",  # of no session at all
            # this session goes on, with the new token only
            authorized_client.headers["Authorization"].split()[1]: "Could not validate token credentials.",
        }
        for token, detail in refusals.items():
            me = await client.get(
                app.url_path_for("users:get-current-user"), headers={"Authorization": f"Bearer {token}"}
            )
            assert me.status_code == status.HTTP_401_UNAUTHORIZED
            assert me.json() == {"detail": detail}

    @pytest.mark.parametrize(
        "current, new, status_code, detail",
        (
            ("wrong-current", "a-brand-new-one", 400, "The current password is incorrect."),
            ("heatcavslakers", "heatcavslakers", 400, "The new password must be different from the current one."),
            ("heatcavslakers", "short", 422, None),
            ("heatcavslakers", "x" * 101, 422, None),
            ("x" * 101, "a-brand-new-one", 422, None),
        ),
    )
    async def test_bad_changes_are_refused_and_change_nothing(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_user: UserInDB,
        current: str,
        new: str,
        status_code: int,
        detail: str | None,
    ) -> None:
        res = await change_password(app, authorized_client, current, new)
        assert res.status_code == status_code
        if detail:
            assert res.json() == {"detail": detail}
        assert await UsersRepository(db).get_user_by_id(user_id=test_user.id) == test_user
        # the token still works: nothing was revoked
        me = await authorized_client.get(app.url_path_for("users:get-current-user"))
        assert me.status_code == status.HTTP_200_OK

    async def test_anonymous_callers_cannot_change_a_password(self, app: FastAPI, client: AsyncClient) -> None:
        res = await change_password(app, client, "whatever", "whatever-else")
        assert res.status_code == status.HTTP_401_UNAUTHORIZED


class TestATokenActsOnlyForItsAccount:
    """Tokens carry the tutorial's `sub` (the email) and `username`, which can change and then
    belong to someone else; the server goes by the id (`uid`), which never does."""

    @pytest.mark.parametrize(
        "renamed, newcomer",
        (
            ({"email": "king@james.io"}, {"email": "lebron@james.io", "username": "newcomer"}),
            ({"username": "kingjames"}, {"email": "newcomer@example.com", "username": "lebronjames"}),
            (
                {"email": "king@james.io", "username": "kingjames"},
                {"email": "lebron@james.io", "username": "lebronjames"},
            ),
        ),
    )
    async def test_a_name_passed_to_another_account_does_not_take_the_old_token_with_it(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        client: AsyncClient,
        test_user: UserPublic,
        renamed: dict[str, str],
        newcomer: dict[str, str],
    ) -> None:
        old_token = authorized_client.headers["Authorization"].split()[1]
        old_claims = auth_service.decode_access_token(token=old_token)
        assert (old_claims.sub, old_claims.username) == (test_user.email, test_user.username)

        assert (await update_me(app, authorized_client, **renamed)).status_code == status.HTTP_200_OK
        res = await client.post(
            app.url_path_for("users:register-new-user"), json={"new_user": {**newcomer, "password": "someone-else"}}
        )
        assert res.status_code == status.HTTP_201_CREATED
        newcomer_id = res.json()["id"]
        assert newcomer_id != test_user.id

        # The old token still names the old email and username, now the newcomer's ...
        me = await authorized_client.get(app.url_path_for("users:get-current-user"))
        assert me.status_code == status.HTTP_200_OK
        # ... and still acts for the account it was minted for, never for the newcomer.
        assert me.json()["id"] == test_user.id
        assert {k: me.json()[k] for k in renamed} == renamed
        res = await authorized_client.put(
            app.url_path_for("profiles:update-own-profile"), json={"profile_update": {"bio": "still me"}}
        )
        assert res.json()["user_id"] == test_user.id

        # A new login gives a token that names the new email and username, and it works.
        login = renamed.get("email", test_user.email)
        res = await log_in(app, client, login, "heatcavslakers")
        assert res.status_code == status.HTTP_200_OK
        new_token = res.json()["access_token"]
        new_claims = auth_service.decode_access_token(token=new_token)
        expected = {"email": test_user.email, "username": test_user.username, **renamed}
        assert (new_claims.sub, new_claims.username, new_claims.uid) == (
            expected["email"],
            expected["username"],
            test_user.id,
        )
        me = await client.get(
            app.url_path_for("users:get-current-user"), headers={"Authorization": f"Bearer {new_token}"}
        )
        assert me.json()["id"] == test_user.id

        # The newcomer's own token is theirs.
        res = await log_in(app, client, newcomer["email"], "someone-else")
        me = await client.get(
            app.url_path_for("users:get-current-user"),
            headers={"Authorization": f"Bearer {res.json()['access_token']}"},
        )
        assert me.json()["id"] == newcomer_id

    async def test_the_tutorials_token_helpers_take_populated_users_and_nothing_else(
        self, db: Database, test_user: UserPublic
    ) -> None:
        # The tutorial's fixtures hand out populated users (UserPublic): they get tokens ...
        assert test_user.profile is not None
        token = auth_service.create_access_token_for_user(user=test_user, secret_key=str(SECRET_KEY))
        assert auth_service.get_username_from_token(token=token, secret_key=str(SECRET_KEY)) == test_user.username
        in_db = await stored(db, test_user)
        assert auth_service.create_access_token_for_user(user=in_db) is not None
        # ... anything else gets None: no user, a view not made from a stored user, something else
        rebuilt = UserPublic(**test_user.model_dump())
        for not_a_stored_user in (None, rebuilt, test_user.model_dump(), test_user.email):
            assert auth_service.create_access_token_for_user(user=not_a_stored_user) is None  # type: ignore[arg-type]
