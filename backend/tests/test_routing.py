"""The API's routes are served flat (copies of each resource router's routes), as include_router would serve them."""

import inspect
import json
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from httpx import ASGITransport, AsyncClient

from app.api import server
from app.api.routes import RESOURCE_ROUTERS, route_settings
from app.api.routes import router as api_router
from app.core.config import API_PREFIX
from tests.conftest import TEST_DATABASE_URL


@pytest.fixture(scope="module")
def flat() -> FastAPI:
    return server.get_application(database_url=TEST_DATABASE_URL)


@pytest.fixture(scope="module")
def nested() -> FastAPI:
    """The same app with the API included the usual way: app.include_router(router, prefix=API_PREFIX)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server, "include_api", lambda target, *, prefix: target.include_router(api_router, prefix=prefix))
        return server.get_application(database_url=TEST_DATABASE_URL)


@pytest.fixture
async def clients(flat: FastAPI, nested: FastAPI) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    """A client of each app, without their lifespan: for answers that need no database."""
    async with (
        AsyncClient(transport=ASGITransport(app=flat), base_url="http://testserver") as flat_client,
        AsyncClient(transport=ASGITransport(app=nested), base_url="http://testserver") as nested_client,
    ):
        yield flat_client, nested_client


def test_a_copy_is_made_from_every_setting_add_api_route_takes() -> None:
    # A setting that FastAPI adds to routes, and that the copies would lose, fails this test.
    taken = set(inspect.signature(APIRouter.add_api_route).parameters) - {"self", "path", "endpoint"}
    first = next(route for route in RESOURCE_ROUTERS[0][0].routes if isinstance(route, APIRoute))
    assert set(route_settings(first)) == taken


def test_the_openapi_document_is_the_same(flat: FastAPI, nested: FastAPI) -> None:
    assert json.dumps(flat.openapi()) == json.dumps(nested.openapi())


def test_every_route_has_the_same_name_path_and_methods(flat: FastAPI) -> None:
    served = [
        (route.name, route.path, sorted(route.methods))
        for route in flat.routes
        if isinstance(route, APIRoute) and route.path.startswith(f"{API_PREFIX}/")
    ]
    expected = [
        (route.name, f"{API_PREFIX}{prefix}{route.path}", sorted(route.methods))
        for resource_router, prefix, _ in RESOURCE_ROUTERS
        for route in resource_router.routes
        if isinstance(route, APIRoute)
    ]
    assert served == expected


@pytest.mark.parametrize(
    "method, path",
    (
        ("GET", "/api/users/me"),  # redirected to the path with a slash
        ("GET", "/api/nothing-here/"),
        ("GET", "/api/cleanings/not-a-number/"),  # 401 before the 422
        ("GET", "/api/cleanings/1/offers/someone/"),
        ("GET", "/api/health/"),
        ("PUT", "/api/users/me/"),  # 401 before the 422 of the missing body
    ),
)
async def test_answers_that_need_no_database_are_the_same(
    clients: tuple[AsyncClient, AsyncClient], method: str, path: str
) -> None:
    flat_client, nested_client = clients
    # The same request id for both, or each answer would carry one of its own.
    headers = {"X-Request-ID": "same-request"}
    flat_res = await flat_client.request(method, path, headers=headers)
    nested_res = await nested_client.request(method, path, headers=headers)
    assert (flat_res.status_code, flat_res.headers.items(), flat_res.content) == (
        nested_res.status_code,
        nested_res.headers.items(),
        nested_res.content,
    )


async def test_a_method_not_allowed_names_the_methods_of_the_path(clients: tuple[AsyncClient, AsyncClient]) -> None:
    # The one answer in which the two differ: the 405 handler (app/api/errors.py) reads the app's
    # routes, and nested, they were one route per included router: its Allow header came out empty.
    flat_client, _ = clients
    res = await flat_client.patch("/api/users/me/")  # GET and PUT from the users' router, DELETE from the account's
    assert (res.status_code, res.headers["Allow"]) == (405, "DELETE, GET, PUT")
