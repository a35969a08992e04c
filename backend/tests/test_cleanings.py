import asyncio

import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient

from app.db.repositories.cleanings import CleaningsRepository
from app.models.cleaning import CleaningCreate, CleaningInDB


class TestCleaningsRoutes:
    async def test_routes_exist(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.post(app.url_path_for("cleanings:create-cleaning"), json={})
        assert res.status_code != status.HTTP_404_NOT_FOUND
        res = await client.get(app.url_path_for("cleanings:get-cleaning-by-id", id=1))
        assert res.status_code != status.HTTP_404_NOT_FOUND or res.json()["detail"] == "No cleaning found with that id."
        res = await client.get(app.url_path_for("cleanings:get-all-cleanings"))
        assert res.status_code == status.HTTP_200_OK

    async def test_invalid_input_raises_error(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.post(app.url_path_for("cleanings:create-cleaning"), json={})
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT


class TestCreateCleaning:
    async def test_valid_input_creates_cleaning(
        self, app: FastAPI, client: AsyncClient, new_cleaning: CleaningCreate
    ) -> None:
        res = await client.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": new_cleaning.model_dump()}
        )
        assert res.status_code == status.HTTP_201_CREATED
        created = CleaningCreate(**res.json())
        assert created == new_cleaning
        assert res.json()["id"] >= 1

    async def test_cleaning_type_defaults_to_spot_clean(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": {"name": "dishes", "price": 5}}
        )
        assert res.status_code == status.HTTP_201_CREATED
        assert res.json()["cleaning_type"] == "spot_clean"
        assert res.json()["description"] is None

    async def test_price_is_stored_with_two_decimals(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.post(
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
        self, app: FastAPI, client: AsyncClient, db: Database, invalid_payload: dict[str, object] | None
    ) -> None:
        res = await client.post(app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": invalid_payload})
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert res.json()["detail"]
        assert await CleaningsRepository(db).get_all_cleanings() == []

    async def test_lone_surrogate_in_text_is_422_not_500(self, app: FastAPI, client: AsyncClient) -> None:
        # Valid JSON, but not encodable as UTF-8: the driver would raise if it got that far.
        body = '{"new_cleaning": {"name": "broken \\ud800 text", "price": 10}}'
        res = await client.post(app.url_path_for("cleanings:create-cleaning"), content=body)
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT


class TestGetCleaning:
    async def test_get_cleaning_by_id(self, app: FastAPI, client: AsyncClient, test_cleaning: CleaningInDB) -> None:
        res = await client.get(app.url_path_for("cleanings:get-cleaning-by-id", id=test_cleaning.id))
        assert res.status_code == status.HTTP_200_OK
        cleaning = CleaningInDB(**res.json())
        assert cleaning == test_cleaning

    @pytest.mark.parametrize(
        "id, status_code",
        (
            (500, 404),
            (-1, 404),
            (0, 404),
            (2**31, 404),  # beyond PostgreSQL's integer: no such row, not a driver error
            (10**30, 404),
            (None, 422),
            ("abc", 422),
        ),
    )
    async def test_wrong_id_returns_error(
        self, app: FastAPI, client: AsyncClient, test_cleaning: CleaningInDB, id: object, status_code: int
    ) -> None:
        res = await client.get(app.url_path_for("cleanings:get-cleaning-by-id", id=id))
        assert res.status_code == status_code
        if status_code == 404:
            assert res.json() == {"detail": "No cleaning found with that id."}

    async def test_get_all_cleanings_returns_every_cleaning(
        self, app: FastAPI, client: AsyncClient, test_cleaning: CleaningInDB
    ) -> None:
        other = CleaningCreate(name="windows", price=30, cleaning_type="full_clean")
        res = await client.post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": other.model_dump()}
        )
        assert res.status_code == status.HTTP_201_CREATED

        res = await client.get(app.url_path_for("cleanings:get-all-cleanings"))
        assert res.status_code == status.HTTP_200_OK
        cleanings = [CleaningInDB(**c) for c in res.json()]
        assert [c.name for c in cleanings] == [test_cleaning.name, "windows"]
        assert cleanings[0] == test_cleaning

    async def test_get_all_cleanings_is_empty_list_when_there_are_none(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.get(app.url_path_for("cleanings:get-all-cleanings"))
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
        client: AsyncClient,
        db: Database,
        test_cleaning: CleaningInDB,
        attrs_to_change: list[str],
        values: list[object],
    ) -> None:
        cleaning_update = dict(zip(attrs_to_change, values, strict=True))
        res = await client.put(
            app.url_path_for("cleanings:update-cleaning-by-id", id=test_cleaning.id),
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
        assert await CleaningsRepository(db).get_cleaning_by_id(id=test_cleaning.id) == updated
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
        client: AsyncClient,
        db: Database,
        test_cleaning: CleaningInDB,
        id: object,
        payload: dict[str, object] | None,
        status_code: int,
    ) -> None:
        cleaning_id = test_cleaning.id if id == "existing" else id
        res = await client.put(
            app.url_path_for("cleanings:update-cleaning-by-id", id=cleaning_id),
            json={"cleaning_update": payload},
        )
        assert res.status_code == status_code
        if status_code == 400:
            assert res.json() == {"detail": "Invalid cleaning type. Cannot be None."}
        assert await CleaningsRepository(db).get_cleaning_by_id(id=test_cleaning.id) == test_cleaning

    async def test_concurrent_partial_updates_both_land(
        self, app: FastAPI, client: AsyncClient, test_cleaning: CleaningInDB
    ) -> None:
        path = app.url_path_for("cleanings:update-cleaning-by-id", id=test_cleaning.id)
        responses = await asyncio.gather(
            *(client.put(path, json={"cleaning_update": {"name": "renamed"}}) for _ in range(5)),
            *(client.put(path, json={"cleaning_update": {"price": 99.5}}) for _ in range(5)),
        )
        assert {res.status_code for res in responses} == {status.HTTP_200_OK}
        res = await client.get(app.url_path_for("cleanings:get-cleaning-by-id", id=test_cleaning.id))
        assert (res.json()["name"], res.json()["price"]) == ("renamed", 99.5)


class TestDeleteCleaning:
    async def test_can_delete_cleaning_successfully(
        self, app: FastAPI, client: AsyncClient, test_cleaning: CleaningInDB
    ) -> None:
        res = await client.delete(app.url_path_for("cleanings:delete-cleaning-by-id", id=test_cleaning.id))
        assert res.status_code == status.HTTP_200_OK
        assert res.json() == test_cleaning.id

        res = await client.get(app.url_path_for("cleanings:get-cleaning-by-id", id=test_cleaning.id))
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
        self, app: FastAPI, client: AsyncClient, db: Database, test_cleaning: CleaningInDB, id: object, status_code: int
    ) -> None:
        res = await client.delete(app.url_path_for("cleanings:delete-cleaning-by-id", id=id))
        assert res.status_code == status_code
        assert await CleaningsRepository(db).get_cleaning_by_id(id=test_cleaning.id) == test_cleaning
