import asyncio
from collections.abc import Callable

import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient

from app.db.repositories.cleanings import CleaningsRepository
from app.models.cleaning import CleaningCreate, CleaningInDB, CleaningPublic
from app.models.user import UserInDB, UserPublic


class TestCleaningsRoutes:
    async def test_routes_exist(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        res = await authorized_client.post(app.url_path_for("cleanings:create-cleaning"), json={})
        assert res.status_code != status.HTTP_404_NOT_FOUND
        res = await authorized_client.get(app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=1))
        assert res.status_code != status.HTTP_404_NOT_FOUND or res.json()["detail"] == "No cleaning found with that id."
        res = await authorized_client.get(app.url_path_for("cleanings:list-all-user-cleanings"))
        assert res.status_code == status.HTTP_200_OK

    async def test_invalid_input_raises_error(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        res = await authorized_client.post(app.url_path_for("cleanings:create-cleaning"), json={})
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT


class TestCreateCleaning:
    async def test_valid_input_creates_cleaning(
        self, app: FastAPI, authorized_client: AsyncClient, new_cleaning: CleaningCreate
    ) -> None:
        res = await authorized_client.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": new_cleaning.model_dump()}
        )
        assert res.status_code == status.HTTP_201_CREATED
        created = CleaningCreate(**res.json())
        assert created == new_cleaning
        assert res.json()["id"] >= 1

    async def test_cleaning_type_defaults_to_spot_clean(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        res = await authorized_client.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": {"name": "dishes", "price": 5}}
        )
        assert res.status_code == status.HTTP_201_CREATED
        assert res.json()["cleaning_type"] == "spot_clean"
        assert res.json()["description"] is None

    async def test_price_is_stored_with_two_decimals(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        res = await authorized_client.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": {"name": "attic", "price": 12.345}}
        )
        assert res.status_code == status.HTTP_201_CREATED
        assert res.json()["price"] == 12.35  # numeric(10, 2) rounds half away from zero

    @pytest.mark.parametrize(
        "invalid_payload",
        (
            None,
            {},
            {"name": "test_name"},
            {"price": 10.00},
            {"name": "test_name", "description": "test"},
            {"name": "", "price": 10.00},
            {"name": "test_name", "price": "ten"},
            {"name": "test_name", "price": -1},
            {"name": "test_name", "price": 100_000_000},
            {"name": "test_name", "price": 99_999_999.999},
            {"name": "test_name", "price": 10, "cleaning_type": "deep_scrub"},
            {"name": "nul \u0000 byte", "price": 10},
            {"name": "x" * 201, "price": 10},
        ),
    )
    async def test_invalid_input_returns_422_and_stores_nothing(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, invalid_payload: dict[str, object] | None
    ) -> None:
        res = await authorized_client.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": invalid_payload}
        )
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert res.json()["detail"]
        assert await db.fetch_val("SELECT count(*) FROM cleanings") == 0

    async def test_lone_surrogate_in_text_is_422_not_500(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        # Valid JSON, but not encodable as UTF-8: the driver would raise if it got that far.
        body = '{"new_cleaning": {"name": "broken \\ud800 text", "price": 10}}'
        res = await authorized_client.post(app.url_path_for("cleanings:create-cleaning"), content=body)
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT


class TestGetCleaning:
    async def test_get_cleaning_by_id(
        self, app: FastAPI, authorized_client: AsyncClient, test_user: UserPublic, test_cleaning: CleaningInDB
    ) -> None:
        res = await authorized_client.get(
            app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=test_cleaning.id)
        )
        assert res.status_code == status.HTTP_200_OK
        cleaning = CleaningPublic(**res.json())
        assert cleaning.model_dump(exclude={"owner"}) == test_cleaning.model_dump(exclude={"owner"})
        # the owner comes embedded, with their profile and without any secret (Part 17)
        owner = res.json()["owner"]
        assert (owner["id"], owner["username"], owner["email"]) == (test_user.id, test_user.username, test_user.email)
        assert owner["profile"]["user_id"] == test_user.id and owner["profile"]["username"] == test_user.username
        assert owner["access_token"] is None
        assert not {"password", "salt", "token_version"} & owner.keys()

    async def test_a_cleaning_whose_owner_is_gone_shows_no_owner(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database, test_cleaning: CleaningInDB
    ) -> None:
        # Cleanings from before owners existed (Part 5) have none.
        await db.execute("UPDATE cleanings SET owner = NULL WHERE id = :id", values={"id": test_cleaning.id})
        res = await authorized_client.get(
            app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=test_cleaning.id)
        )
        assert res.status_code == status.HTTP_200_OK
        assert res.json()["owner"] is None

    @pytest.mark.parametrize(
        "id, status_code",
        (
            (500, 404),
            (-1, 422),  # an id is a positive integer (Part 10)
            (0, 422),
            (2**31, 404),  # beyond PostgreSQL's integer: no such row, not a driver error
            (10**30, 404),
            (None, 422),
            ("abc", 422),
        ),
    )
    async def test_wrong_id_returns_error(
        self, app: FastAPI, authorized_client: AsyncClient, test_cleaning: CleaningInDB, id: object, status_code: int
    ) -> None:
        res = await authorized_client.get(app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=id))
        assert res.status_code == status_code
        if status_code == 404:
            assert res.json() == {"detail": "No cleaning found with that id."}

    async def test_list_returns_every_cleaning_of_the_caller(
        self, app: FastAPI, authorized_client: AsyncClient, test_cleaning: CleaningInDB
    ) -> None:
        other = CleaningCreate(name="windows", price=30, cleaning_type="full_clean")
        res = await authorized_client.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": other.model_dump()}
        )
        assert res.status_code == status.HTTP_201_CREATED

        res = await authorized_client.get(app.url_path_for("cleanings:list-all-user-cleanings"))
        assert res.status_code == status.HTTP_200_OK
        cleanings = [CleaningInDB(**c) for c in res.json()]
        assert [c.name for c in cleanings] == [test_cleaning.name, "windows"]
        assert cleanings[0] == test_cleaning

    async def test_list_is_empty_when_the_caller_has_none(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        res = await authorized_client.get(app.url_path_for("cleanings:list-all-user-cleanings"))
        assert res.status_code == status.HTTP_200_OK
        assert res.json() == []


class TestUpdateCleaning:
    @pytest.mark.parametrize(
        "attrs_to_change, values",
        (
            (["name"], ["new fake cleaning name"]),
            (["description"], ["new fake cleaning description"]),
            (["description"], [None]),
            (["price"], [3.14]),
            (["cleaning_type"], ["full_clean"]),
            (["name", "description"], ["extra new fake cleaning name", "extra new fake cleaning description"]),
            (["price", "cleaning_type"], [42.00, "dust_up"]),
        ),
    )
    async def test_update_cleaning_with_valid_input(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_cleaning: CleaningInDB,
        attrs_to_change: list[str],
        values: list[object],
    ) -> None:
        cleaning_update = dict(zip(attrs_to_change, values, strict=True))
        res = await authorized_client.put(
            app.url_path_for("cleanings:update-cleaning-by-id", cleaning_id=test_cleaning.id),
            json={"cleaning_update": cleaning_update},
        )
        assert res.status_code == status.HTTP_200_OK
        updated = CleaningInDB(**res.json())
        assert updated.id == test_cleaning.id
        for attr, value in cleaning_update.items():
            assert getattr(updated, attr) == value
        # the attributes left out keep their values
        for attr in {"name", "description", "price", "cleaning_type"} - set(attrs_to_change):
            assert getattr(updated, attr) == getattr(test_cleaning, attr)
        # and the database agrees with the response
        assert await CleaningsRepository(db).get_cleaning_by_id(id=test_cleaning.id, populate=False) == updated
        assert updated.updated_at is not None and test_cleaning.updated_at is not None
        assert updated.updated_at > test_cleaning.updated_at

    @pytest.mark.parametrize(
        "id, payload, status_code",
        (
            (-1, {"name": "test"}, 422),
            (0, {"name": "test2"}, 422),
            (500, {"name": "test3"}, 404),
            (2**31, {"name": "test4"}, 404),
            (None, {"name": "test5"}, 422),
            ("existing", None, 422),
            ("existing", {"cleaning_type": "invalid cleaning type"}, 422),
            ("existing", {"cleaning_type": None}, 400),
            ("existing", {"name": None}, 422),
            ("existing", {"price": None}, 422),
            ("existing", {"price": -5}, 422),
            (500, {"cleaning_type": None}, 404),
        ),
    )
    async def test_update_cleaning_with_invalid_input_throws_error(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_cleaning: CleaningInDB,
        id: object,
        payload: dict[str, object] | None,
        status_code: int,
    ) -> None:
        cleaning_id = test_cleaning.id if id == "existing" else id
        res = await authorized_client.put(
            app.url_path_for("cleanings:update-cleaning-by-id", cleaning_id=cleaning_id),
            json={"cleaning_update": payload},
        )
        assert res.status_code == status_code
        if status_code == 400:
            assert res.json() == {"detail": "Invalid cleaning type. Cannot be None."}
        assert await CleaningsRepository(db).get_cleaning_by_id(id=test_cleaning.id, populate=False) == test_cleaning

    async def test_concurrent_partial_updates_both_land(
        self, app: FastAPI, authorized_client: AsyncClient, test_cleaning: CleaningInDB
    ) -> None:
        path = app.url_path_for("cleanings:update-cleaning-by-id", cleaning_id=test_cleaning.id)
        responses = await asyncio.gather(
            *(authorized_client.put(path, json={"cleaning_update": {"name": "renamed"}}) for _ in range(5)),
            *(authorized_client.put(path, json={"cleaning_update": {"price": 99.5}}) for _ in range(5)),
        )
        assert {res.status_code for res in responses} == {status.HTTP_200_OK}
        res = await authorized_client.get(
            app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=test_cleaning.id)
        )
        assert (res.json()["name"], res.json()["price"]) == ("renamed", 99.5)


class TestDeleteCleaning:
    async def test_can_delete_cleaning_successfully(
        self, app: FastAPI, authorized_client: AsyncClient, test_cleaning: CleaningInDB
    ) -> None:
        res = await authorized_client.delete(
            app.url_path_for("cleanings:delete-cleaning-by-id", cleaning_id=test_cleaning.id)
        )
        assert res.status_code == status.HTTP_200_OK
        assert res.json() == test_cleaning.id

        res = await authorized_client.get(
            app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=test_cleaning.id)
        )
        assert res.status_code == status.HTTP_404_NOT_FOUND

    @pytest.mark.parametrize(
        "id, status_code",
        (
            (500, 404),
            (2**31, 404),
            (0, 422),
            (-1, 422),
            (None, 422),
        ),
    )
    async def test_wrong_id_throws_error(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_cleaning: CleaningInDB,
        id: object,
        status_code: int,
    ) -> None:
        res = await authorized_client.delete(app.url_path_for("cleanings:delete-cleaning-by-id", cleaning_id=id))
        assert res.status_code == status_code
        assert await CleaningsRepository(db).get_cleaning_by_id(id=test_cleaning.id, populate=False) == test_cleaning


class TestCleaningOwnership:
    @pytest.mark.parametrize(
        "method, route, params, body",
        (
            ("POST", "cleanings:create-cleaning", {}, {"new_cleaning": {"name": "x", "price": 1}}),
            ("GET", "cleanings:list-all-user-cleanings", {}, None),
            ("GET", "cleanings:get-cleaning-by-id", {"cleaning_id": "existing"}, None),
            ("PUT", "cleanings:update-cleaning-by-id", {"cleaning_id": "existing"}, {"cleaning_update": {"price": 1}}),
            ("DELETE", "cleanings:delete-cleaning-by-id", {"cleaning_id": "existing"}, None),
        ),
    )
    async def test_every_cleanings_route_needs_a_logged_in_user(
        self,
        app: FastAPI,
        client: AsyncClient,
        db: Database,
        test_cleaning: CleaningInDB,
        method: str,
        route: str,
        params: dict[str, object],
        body: dict[str, object] | None,
    ) -> None:
        path = app.url_path_for(route, **{k: test_cleaning.id for k in params})
        res = await client.request(method, path, json=body)
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.headers["WWW-Authenticate"] == "Bearer"
        assert await db.fetch_val("SELECT count(*) FROM cleanings") == 1
        assert await CleaningsRepository(db).get_cleaning_by_id(id=test_cleaning.id, populate=False) == test_cleaning

    async def test_the_creator_owns_a_new_cleaning(
        self, app: FastAPI, authorized_client: AsyncClient, test_user: UserInDB
    ) -> None:
        res = await authorized_client.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": {"name": "garage", "price": 50}}
        )
        assert res.status_code == status.HTTP_201_CREATED
        assert res.json()["owner"] == test_user.id

    async def test_the_list_shows_only_the_callers_cleanings(
        self,
        app: FastAPI,
        client_for: Callable[[UserInDB], AsyncClient],
        test_user: UserInDB,
        test_user2: UserInDB,
        test_cleaning: CleaningInDB,
    ) -> None:
        other = client_for(test_user2)
        res = await other.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": {"name": "serena's", "price": 9}}
        )
        assert res.status_code == status.HTTP_201_CREATED

        mine = await client_for(test_user).get(app.url_path_for("cleanings:list-all-user-cleanings"))
        theirs = await other.get(app.url_path_for("cleanings:list-all-user-cleanings"))
        assert [c["id"] for c in mine.json()] == [test_cleaning.id]
        assert [c["name"] for c in theirs.json()] == ["serena's"]

    async def test_any_logged_in_user_can_read_a_cleaning(
        self,
        app: FastAPI,
        client_for: Callable[[UserInDB], AsyncClient],
        test_user2: UserInDB,
        test_cleaning: CleaningInDB,
    ) -> None:
        path = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=test_cleaning.id)
        res = await client_for(test_user2).get(path)
        assert res.status_code == status.HTTP_200_OK
        assert CleaningPublic(**res.json()).model_dump(exclude={"owner"}) == test_cleaning.model_dump(exclude={"owner"})
        assert res.json()["owner"]["id"] == test_cleaning.owner

    @pytest.mark.parametrize(
        "method, route, body",
        (
            ("PUT", "cleanings:update-cleaning-by-id", {"cleaning_update": {"price": 0.01}}),
            ("DELETE", "cleanings:delete-cleaning-by-id", None),
        ),
    )
    async def test_others_cannot_modify_a_cleaning(
        self,
        app: FastAPI,
        db: Database,
        client_for: Callable[[UserInDB], AsyncClient],
        test_user2: UserInDB,
        test_cleaning: CleaningInDB,
        method: str,
        route: str,
        body: dict[str, object] | None,
    ) -> None:
        other = client_for(test_user2)
        res = await other.request(method, app.url_path_for(route, cleaning_id=test_cleaning.id), json=body)
        assert res.status_code == status.HTTP_403_FORBIDDEN
        assert res.json() == {"detail": "Users are only able to modify cleanings that they created."}
        assert await CleaningsRepository(db).get_cleaning_by_id(id=test_cleaning.id, populate=False) == test_cleaning

        # a cleaning that does not exist is still a 404, not a 403
        res = await other.request(method, app.url_path_for(route, cleaning_id=test_cleaning.id + 1), json=body)
        assert res.status_code == status.HTTP_404_NOT_FOUND

    async def test_superusers_can_modify_any_cleaning(
        self,
        app: FastAPI,
        client_for: Callable[[UserInDB], AsyncClient],
        test_superuser: UserInDB,
        test_cleaning: CleaningInDB,
    ) -> None:
        admin = client_for(test_superuser)
        path = app.url_path_for("cleanings:update-cleaning-by-id", cleaning_id=test_cleaning.id)
        res = await admin.put(path, json={"cleaning_update": {"name": "moderated"}})
        assert res.status_code == status.HTTP_200_OK
        assert res.json()["name"] == "moderated"
        assert res.json()["owner"] == test_cleaning.owner  # moderation does not take ownership

        path = app.url_path_for("cleanings:delete-cleaning-by-id", cleaning_id=test_cleaning.id)
        res = await admin.delete(path)
        assert res.status_code == status.HTTP_200_OK

    async def test_a_users_cleanings_go_when_the_user_is_deleted(
        self, db: Database, test_user: UserInDB, test_cleaning: CleaningInDB
    ) -> None:
        await db.execute("DELETE FROM users WHERE id = :id", values={"id": test_user.id})
        assert await CleaningsRepository(db).get_cleaning_by_id(id=test_cleaning.id, populate=False) is None


class TestCleaningsFromBeforeOwners:
    """Rows created before the owner revision have no owner (see that migration)."""

    @pytest.fixture
    async def unowned_cleaning(self, db: Database) -> int:
        cleaning_id = await db.fetch_val("INSERT INTO cleanings (name, price) VALUES ('legacy', 5) RETURNING id")
        return int(cleaning_id)

    async def test_anyone_logged_in_can_read_it_but_nobody_lists_it(
        self, app: FastAPI, authorized_client: AsyncClient, unowned_cleaning: int
    ) -> None:
        res = await authorized_client.get(
            app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=unowned_cleaning)
        )
        assert res.status_code == status.HTTP_200_OK
        assert res.json()["owner"] is None
        res = await authorized_client.get(app.url_path_for("cleanings:list-all-user-cleanings"))
        assert res.json() == []

    async def test_only_superusers_can_change_it(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        client_for: Callable[[UserInDB], AsyncClient],
        test_superuser: UserInDB,
        unowned_cleaning: int,
    ) -> None:
        path = app.url_path_for("cleanings:update-cleaning-by-id", cleaning_id=unowned_cleaning)
        body = {"cleaning_update": {"price": 6}}
        assert (await authorized_client.put(path, json=body)).status_code == status.HTTP_403_FORBIDDEN
        assert (await client_for(test_superuser).put(path, json=body)).status_code == status.HTTP_200_OK


class TestWhichErrorWins:
    """The tutorial's order (Part 10 on): who is asking (401), then the cleaning (422 for a malformed
    id, 404 for a missing one), then the permission (403), then the body (422, then 400)."""

    @pytest.mark.parametrize("method", ("GET", "PUT", "DELETE"))
    @pytest.mark.parametrize("cleaning_id", ("existing", 999, 0, -1, "abc"))
    async def test_anonymous_callers_get_401_whatever_the_id_and_body(
        self, app: FastAPI, client: AsyncClient, test_cleaning: CleaningInDB, method: str, cleaning_id: object
    ) -> None:
        cleaning_id = test_cleaning.id if cleaning_id == "existing" else cleaning_id
        path = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=cleaning_id)
        res = await client.request(method, path, json={"cleaning_update": {"price": "not a number"}})
        assert res.status_code == status.HTTP_401_UNAUTHORIZED

    @pytest.mark.parametrize(
        "who, cleaning_id, body, status_code",
        (
            ("other", "existing", {"cleaning_update": {"price": "not a number"}}, 403),
            ("other", "existing", {"cleaning_update": {"cleaning_type": None}}, 403),
            ("other", 999, {"cleaning_update": {"price": "not a number"}}, 404),
            ("other", -1, {"cleaning_update": {"price": 1}}, 422),
            ("owner", "existing", {"cleaning_update": {"price": "not a number"}}, 422),
            ("owner", "existing", {"cleaning_update": {"cleaning_type": None}}, 400),
            ("owner", 999, {"cleaning_update": {"price": "not a number"}}, 404),
        ),
    )
    async def test_updates(
        self,
        app: FastAPI,
        client_for: Callable[[UserInDB | UserPublic], AsyncClient],
        test_user: UserPublic,
        test_user2: UserPublic,
        test_cleaning: CleaningInDB,
        who: str,
        cleaning_id: object,
        body: dict[str, object],
        status_code: int,
    ) -> None:
        caller = client_for(test_user if who == "owner" else test_user2)
        cleaning_id = test_cleaning.id if cleaning_id == "existing" else cleaning_id
        res = await caller.put(app.url_path_for("cleanings:update-cleaning-by-id", cleaning_id=cleaning_id), json=body)
        assert res.status_code == status_code
