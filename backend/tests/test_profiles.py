"""Profiles (Part 9): every user has one, anyone logged in can read it, only its user can change it."""

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient, Response

from app.db.repositories.cleanings import CleaningsRepository
from app.db.repositories.profiles import ProfilesRepository
from app.db.repositories.users import UsersRepository
from app.models.cleaning import CleaningInDB
from app.models.profile import ProfileInDB, ProfilePublic
from app.models.user import UserCreate, UserPublic
from tests.conftest import AnyUser

PROFILE_NOT_FOUND = {"detail": "No profile found with that username."}


async def update_profile(app: FastAPI, client: AsyncClient, **changes: object) -> Response:
    return await client.put(app.url_path_for("profiles:update-own-profile"), json={"profile_update": changes})


async def get_profile(app: FastAPI, client: AsyncClient, username: str) -> Response:
    return await client.get(app.url_path_for("profiles:get-profile-by-username", username=username))


class TestEveryUserHasAProfile:
    async def test_registration_makes_an_empty_profile(self, app: FastAPI, client: AsyncClient, db: Database) -> None:
        new_user = {"email": "dwayne@johnson.io", "username": "therock", "password": "dwaynetherockjohnson"}
        res = await client.post(app.url_path_for("users:register-new-user"), json={"new_user": new_user})
        assert res.status_code == status.HTTP_201_CREATED
        created = UserPublic(**res.json())
        stored_profile = await ProfilesRepository(db).get_profile_by_user_id(user_id=created.id)
        assert isinstance(stored_profile, ProfileInDB)
        assert created.profile is not None and created.profile.id == stored_profile.id
        assert (stored_profile.full_name, stored_profile.phone_number, stored_profile.bio, stored_profile.image) == (
            None,
            None,
            None,
            None,
        )

    @pytest.fixture
    async def profiles_refused(self, db: Database) -> AsyncIterator[None]:
        """A database that refuses every new profile (as a full disk or a bug would)."""
        await db.execute(
            "CREATE FUNCTION refuse_profile() RETURNS TRIGGER AS $$"
            " BEGIN RAISE EXCEPTION 'no profiles today'; END; $$ LANGUAGE plpgsql"
        )
        await db.execute(
            "CREATE TRIGGER refuse_profiles BEFORE INSERT ON profiles FOR EACH ROW EXECUTE FUNCTION refuse_profile()"
        )
        try:
            yield
        finally:
            await db.execute("DROP TRIGGER refuse_profiles ON profiles")
            await db.execute("DROP FUNCTION refuse_profile()")

    async def test_a_profile_that_cannot_be_written_leaves_no_user_behind(
        self, db: Database, profiles_refused: None
    ) -> None:
        new_user = UserCreate(email="half@example.com", username="half", password="a-password")
        with pytest.raises(asyncpg.RaiseError):
            await UsersRepository(db).register_new_user(new_user=new_user)
        assert await db.fetch_val("SELECT count(*) FROM users") == 0

    async def test_the_database_refuses_a_user_without_a_profile(self, db: Database) -> None:
        # Whatever writes the row (a script, psql, a future bug), the transaction fails at commit.
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="has no profile"):
            await db.execute(
                "INSERT INTO users (username, email, password, salt) VALUES ('bare', 'bare@example.com', 'h', 's')"
            )
        assert await db.fetch_val("SELECT count(*) FROM users") == 0

    async def test_the_database_refuses_to_take_a_profile_from_its_user(
        self, db: Database, test_user: UserPublic, test_user2: UserPublic
    ) -> None:
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="has no profile"):
            await db.execute("DELETE FROM profiles WHERE user_id = :id", values={"id": test_user.id})
        with pytest.raises(asyncpg.UniqueViolationError):  # one profile per user
            await db.execute("INSERT INTO profiles (user_id) VALUES (:id)", values={"id": test_user.id})
        assert await db.fetch_val("SELECT count(*) FROM profiles") == 2

    async def test_deleting_a_user_deletes_their_profile(
        self, db: Database, test_user: UserPublic, test_user2: UserPublic
    ) -> None:
        await db.execute("DELETE FROM users WHERE id = :id", values={"id": test_user.id})
        assert await ProfilesRepository(db).get_profile_by_user_id(user_id=test_user.id) is None
        assert await ProfilesRepository(db).get_profile_by_user_id(user_id=test_user2.id) is not None

    async def test_the_current_user_comes_with_their_profile(
        self, app: FastAPI, authorized_client: AsyncClient, test_user: UserPublic
    ) -> None:
        await update_profile(app, authorized_client, full_name="LeBron James")
        res = await authorized_client.get(app.url_path_for("users:get-current-user"))
        assert res.status_code == status.HTTP_200_OK
        profile = res.json()["profile"]
        assert (profile["user_id"], profile["full_name"]) == (test_user.id, "LeBron James")
        assert (profile["username"], profile["email"]) == (test_user.username, test_user.email)


class TestProfileView:
    async def test_any_logged_in_user_can_view_a_profile(
        self, app: FastAPI, authorized_client: AsyncClient, test_user2: UserPublic
    ) -> None:
        res = await get_profile(app, authorized_client, test_user2.username)
        assert res.status_code == status.HTTP_200_OK
        profile = ProfilePublic(**res.json())
        assert (profile.user_id, profile.username, profile.email) == (
            test_user2.id,
            test_user2.username,
            test_user2.email,
        )
        assert profile.created_at is not None and profile.updated_at is not None

    async def test_usernames_match_whatever_their_case(
        self, app: FastAPI, authorized_client: AsyncClient, test_user2: UserPublic
    ) -> None:
        res = await get_profile(app, authorized_client, "SerenaWilliams")
        assert res.status_code == status.HTTP_200_OK
        assert res.json()["username"] == "serenawilliams"  # as registered

    async def test_anonymous_callers_get_401_whatever_the_username(
        self, app: FastAPI, client: AsyncClient, test_user2: UserPublic
    ) -> None:
        for username in (test_user2.username, "no_such_user", "a", "bad name!"):
            res = await client.get(app.url_path_for("profiles:get-profile-by-username", username=username))
            assert res.status_code == status.HTTP_401_UNAUTHORIZED
            assert res.headers["WWW-Authenticate"] == "Bearer"

    async def test_an_unknown_username_is_404(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        res = await get_profile(app, authorized_client, "username_doesnt_match")
        assert res.status_code == status.HTTP_404_NOT_FOUND
        assert res.json() == PROFILE_NOT_FOUND

    @pytest.mark.parametrize("username", ("ab", "not a name", "semi;colon", "x" * 33, "%00nul"))
    async def test_a_name_no_user_can_have_is_422(
        self, app: FastAPI, authorized_client: AsyncClient, username: str
    ) -> None:
        res = await authorized_client.get(f"/api/profiles/{username}/")
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT

    async def test_me_is_the_callers_own_profile(
        self, app: FastAPI, authorized_client: AsyncClient, client: AsyncClient, test_user: UserPublic
    ) -> None:
        await update_profile(app, authorized_client, bio="mine")
        res = await authorized_client.get(app.url_path_for("profiles:get-own-profile"))
        assert res.status_code == status.HTTP_200_OK
        assert (res.json()["user_id"], res.json()["username"], res.json()["bio"]) == (
            test_user.id,
            test_user.username,
            "mine",
        )
        res = await client.get(app.url_path_for("profiles:get-own-profile"))
        assert res.status_code == status.HTTP_401_UNAUTHORIZED


class TestProfileManagement:
    @pytest.mark.parametrize(
        "attr, value",
        (
            ("full_name", "Lebron James"),
            ("phone_number", "555-333-1000"),
            ("phone_number", "+44 (0)20 7946 0018"),
            ("bio", "This is a test bio"),
            ("bio", "Multi-line\nbio with émojis 🧹"),
            ("image", "http://testimages.com/testimage"),
            ("image", "https://cdn.example.com/u/1/avatar.png?size=200#top"),
        ),
    )
    async def test_user_can_update_own_profile(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_user: UserPublic,
        attr: str,
        value: str,
    ) -> None:
        assert test_user.profile is not None and getattr(test_user.profile, attr) != value
        res = await update_profile(app, authorized_client, **{attr: value})
        assert res.status_code == status.HTTP_200_OK
        profile = ProfilePublic(**res.json())
        assert getattr(profile, attr) == value  # stored as sent: no trailing slash added to a URL
        assert (profile.username, profile.email) == (test_user.username, test_user.email)
        stored_profile = await ProfilesRepository(db).get_profile_by_user_id(user_id=test_user.id)
        assert stored_profile is not None and getattr(stored_profile, attr) == value
        assert stored_profile.updated_at is not None and test_user.profile.updated_at is not None
        assert stored_profile.updated_at > test_user.profile.updated_at

    async def test_fields_left_out_keep_their_values_and_null_clears_one(
        self, app: FastAPI, authorized_client: AsyncClient
    ) -> None:
        res = await update_profile(app, authorized_client, full_name="LeBron", bio="Four rings")
        assert (res.json()["full_name"], res.json()["bio"]) == ("LeBron", "Four rings")
        res = await update_profile(app, authorized_client, bio=None)
        assert res.status_code == status.HTTP_200_OK
        assert (res.json()["full_name"], res.json()["bio"]) == ("LeBron", None)
        res = await update_profile(app, authorized_client)
        assert (res.json()["full_name"], res.json()["bio"]) == ("LeBron", None)

    async def test_a_user_changes_only_their_own_profile(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_user2: UserPublic
    ) -> None:
        # there is no field that names another user: user_id, id and username are ignored
        res = await update_profile(
            app, authorized_client, full_name="Mine", user_id=test_user2.id, id=test_user2.id, username="x"
        )
        assert res.status_code == status.HTTP_200_OK
        theirs = await ProfilesRepository(db).get_profile_by_user_id(user_id=test_user2.id)
        assert theirs is not None and theirs.full_name is None
        assert res.json()["user_id"] != test_user2.id

    async def test_two_updates_at_once_of_different_fields_both_land(
        self, app: FastAPI, client_for: Callable[[AnyUser], AsyncClient], test_user: UserPublic
    ) -> None:
        tabs = [client_for(test_user) for _ in range(6)]
        fields = ("full_name", "bio", "phone_number") * 2
        values = {"full_name": "LeBron Raymone James", "bio": "Akron", "phone_number": "555-0100"}
        responses = await asyncio.gather(
            *(update_profile(app, tab, **{field: values[field]}) for tab, field in zip(tabs, fields, strict=True))
        )
        assert {res.status_code for res in responses} == {200}
        res = await get_profile(app, tabs[0], test_user.username)
        assert {field: res.json()[field] for field in values} == values

    @pytest.mark.parametrize(
        "attr, value",
        (
            ("full_name", []),
            ("full_name", "x" * 101),
            ("full_name", "nul \x00 byte"),
            ("bio", {}),
            ("bio", "x" * 2001),
            ("phone_number", "call me maybe"),
            ("phone_number", "5" * 33),
            ("image", "./image-string.png"),
            ("image", 5),
            ("image", "ftp://example.com/a.png"),
            ("image", "javascript:alert(1)"),
            ("image", "http://"),
            ("image", "http://1.2.3.999/a.png"),
            ("image", "https://example.com/" + "a" * 2048),
            ("image", "https://exa mple.com/a.png"),
        ),
    )
    async def test_invalid_updates_are_422_and_change_nothing(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_user: UserPublic,
        attr: str,
        value: object,
    ) -> None:
        res = await update_profile(app, authorized_client, **{attr: value})
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert res.json()["detail"][0]["loc"][-1] == attr
        unchanged = await ProfilesRepository(db).get_profile_by_user_id(user_id=test_user.id)
        assert unchanged is not None and test_user.profile is not None
        names = {"username", "email"}
        assert unchanged.model_dump(exclude=names) == test_user.profile.model_dump(exclude=names)

    async def test_anonymous_callers_cannot_update(self, app: FastAPI, client: AsyncClient) -> None:
        res = await update_profile(app, client, full_name="Nobody")
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        # even with a body that would be a 422: who is asking is settled first
        res = await update_profile(app, client, image=5)
        assert res.status_code == status.HTTP_401_UNAUTHORIZED

    async def test_a_body_that_is_not_json_is_400(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        res = await authorized_client.put(app.url_path_for("profiles:update-own-profile"), content=b"\xff{not json")
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": "There was an error parsing the body"}


class TestTheTutorialsRepositoryCalls:
    async def test_lookups_populate_by_default_and_not_when_asked(self, db: Database, test_user: UserPublic) -> None:
        user_repo = UsersRepository(db)
        for populated in (
            await user_repo.get_user_by_email(email=test_user.email),
            await user_repo.get_user_by_username(username=test_user.username),
            await user_repo.get_user_by_id(user_id=test_user.id),
        ):
            assert isinstance(populated, UserPublic) and populated.profile is not None
            assert not hasattr(populated, "password")
        stored_user = await user_repo.get_user_by_username(username=test_user.username, populate=False)
        assert stored_user is not None and stored_user.password and stored_user.salt
        assert await user_repo.populate_user(user=stored_user) == test_user
        assert await user_repo.get_user_by_username(username="nobody", populate=False) is None

    async def test_a_cleaning_populates_with_its_owner(
        self, db: Database, test_user: UserPublic, test_cleaning: CleaningInDB
    ) -> None:
        cleanings_repo = CleaningsRepository(db)
        populated = await cleanings_repo.get_cleaning_by_id(id=test_cleaning.id, requesting_user=test_user)
        assert populated is not None and populated.owner == test_user
        assert await cleanings_repo.populate_cleaning(cleaning=test_cleaning) == populated
        plain = await cleanings_repo.get_cleaning_by_id(id=test_cleaning.id, populate=False)
        assert plain == test_cleaning and plain.owner == test_user.id
