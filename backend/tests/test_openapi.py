"""Clients generated from the OpenAPI document: the names they are written with, and that they work.

openapi-python-client names a module and its functions after each operation's `operationId` and a
class after each schema; openapi-typescript keys its `operations` by the id. Those names are part of
the API: a change to the lists below renames something in every generated client, so make it on
purpose.
"""

import importlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI, status
from fastapi.routing import APIRoute
from httpx import ASGITransport, AsyncClient

from app.api import server
from app.api.openapi import OpenAPINamingError, name_body_schemas
from app.api.routes import include_api
from app.api.routes import router as api_router
from tests.conftest import TEST_DATABASE_URL

OPERATIONS = [
    ("get", "/api/cleanings/", "cleanings_list_all_user_cleanings"),
    ("post", "/api/cleanings/", "cleanings_create_cleaning"),
    ("get", "/api/cleanings/search/", "cleanings_search_cleanings"),
    ("get", "/api/cleanings/{cleaning_id}/", "cleanings_get_cleaning_by_id"),
    ("put", "/api/cleanings/{cleaning_id}/", "cleanings_update_cleaning_by_id"),
    ("delete", "/api/cleanings/{cleaning_id}/", "cleanings_delete_cleaning_by_id"),
    ("post", "/api/users/", "users_register_new_user"),
    ("get", "/api/users/", "users_list_users"),
    ("post", "/api/users/login/token/", "users_login_email_and_password"),
    ("get", "/api/users/me/", "users_get_current_user"),
    ("put", "/api/users/me/", "users_update_current_user"),
    ("delete", "/api/users/me/", "users_delete_current_user"),
    ("put", "/api/users/me/password/", "users_change_password"),
    ("post", "/api/users/{user_id}/deactivate/", "users_deactivate_user"),
    ("post", "/api/users/{user_id}/reactivate/", "users_reactivate_user"),
    ("post", "/api/users/{user_id}/end-sessions/", "users_end_user_sessions"),
    ("post", "/api/users/login/token/refresh/", "users_refresh_access_token"),
    ("post", "/api/users/logout/", "users_logout"),
    ("get", "/api/users/me/sessions/", "users_list_my_sessions"),
    ("delete", "/api/users/me/sessions/{session_id}/", "users_end_my_session"),
    ("post", "/api/users/me/verification/", "users_send_verification_email"),
    ("post", "/api/users/verify-email/", "users_verify_email"),
    ("post", "/api/users/password-reset/", "users_request_password_reset"),
    ("post", "/api/users/password-reset/confirm/", "users_reset_password"),
    ("get", "/api/users/me/export/", "users_export_current_user"),
    ("get", "/api/users/me/mfa/", "users_get_mfa_status"),
    ("post", "/api/users/me/mfa/enrolment/", "users_start_mfa_enrolment"),
    ("post", "/api/users/me/mfa/enrolment/confirm/", "users_confirm_mfa_enrolment"),
    ("post", "/api/users/me/mfa/recovery-codes/", "users_renew_recovery_codes"),
    ("post", "/api/users/me/mfa/disable/", "users_disable_mfa"),
    ("post", "/api/users/{user_id}/mfa/reset/", "users_reset_user_mfa"),
    ("post", "/api/users/login/mfa/", "users_login_mfa"),
    ("get", "/api/users/me/notifications/", "users_get_notification_preferences"),
    ("put", "/api/users/me/notifications/", "users_update_notification_preferences"),
    ("get", "/api/users/unsubscribe/", "users_preview_unsubscribe"),
    ("post", "/api/users/unsubscribe/", "users_unsubscribe"),
    ("get", "/api/profiles/me/", "profiles_get_own_profile"),
    ("put", "/api/profiles/me/", "profiles_update_own_profile"),
    ("get", "/api/profiles/{username}/", "profiles_get_profile_by_username"),
    ("get", "/api/profiles/", "profiles_list_cleaners"),
    ("post", "/api/cleanings/{cleaning_id}/offers/", "offers_create_offer"),
    ("get", "/api/cleanings/{cleaning_id}/offers/", "offers_list_offers_for_cleaning"),
    ("put", "/api/cleanings/{cleaning_id}/offers/", "offers_cancel_offer_from_user"),
    ("delete", "/api/cleanings/{cleaning_id}/offers/", "offers_rescind_offer_from_user"),
    ("get", "/api/cleanings/{cleaning_id}/offers/{username}/", "offers_get_offer_from_user"),
    ("put", "/api/cleanings/{cleaning_id}/offers/{username}/", "offers_accept_offer_from_user"),
    ("post", "/api/users/{username}/evaluations/{cleaning_id}/", "evaluations_create_evaluation_for_cleaner"),
    ("get", "/api/users/{username}/evaluations/{cleaning_id}/", "evaluations_get_evaluation_for_cleaner"),
    ("get", "/api/users/{username}/evaluations/", "evaluations_list_evaluations_for_cleaner"),
    ("get", "/api/users/{username}/evaluations/stats/", "evaluations_get_stats_for_cleaner"),
    ("get", "/api/feed/cleanings/", "feed_get_cleaning_feed_for_user"),
    ("get", "/api/security-events/", "security_events_list_security_events"),
    ("get", "/api/health/", "health_alive"),
    ("get", "/api/health/ready/", "health_ready"),
]

# The bodies FastAPI would call `Body_<operationId>`: each route that embeds its model under a key
# (the tutorial's `{"new_cleaning": {...}}`), and the login form.
BODIES = {
    "cleanings_create_cleaning": ("application/json", "NewCleaningBody"),
    "cleanings_update_cleaning_by_id": ("application/json", "CleaningUpdateBody"),
    "users_register_new_user": ("application/json", "NewUserBody"),
    "users_login_email_and_password": ("application/x-www-form-urlencoded", "UsersLoginEmailAndPasswordForm"),
    "users_update_current_user": ("application/json", "UserUpdateBody"),
    "users_change_password": ("application/json", "PasswordChangeBody"),
    "users_delete_current_user": ("application/json", "AccountDeletionBody"),
    "profiles_update_own_profile": ("application/json", "ProfileUpdateBody"),
    "users_update_notification_preferences": ("application/json", "NotificationPreferencesBody"),
    "evaluations_create_evaluation_for_cleaner": ("application/json", "EvaluationCreateBody"),
}


@pytest.fixture(scope="module")
def built() -> FastAPI:
    """The app as get_application builds it (its lifespan not run: the document needs no database)."""
    return server.get_application(database_url=TEST_DATABASE_URL)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


class TestOperationIds:
    def test_each_operation_has_the_id_written_here(self, built: FastAPI) -> None:
        ids = [(method, path, operation["operationId"]) for method, path, operation in operations(built.openapi())]
        assert ids == OPERATIONS

    def test_each_id_is_its_route_name_as_an_identifier(self, built: FastAPI) -> None:
        for route in built.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                assert route.unique_id.isidentifier(), route.unique_id
                assert route.unique_id == route.name.replace(":", "_").replace("-", "_")

    def test_an_included_router_gives_the_same_ids(self) -> None:
        # The API's one router included the usual way (tests/test_routing.py compares the whole document).
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                server, "include_api", lambda target, *, prefix: target.include_router(api_router, prefix=prefix)
            )
            nested = server.get_application(database_url=TEST_DATABASE_URL)
        assert [(m, p, op["operationId"]) for m, p, op in operations(nested.openapi())] == OPERATIONS


async def unnamed() -> dict[str, str]:
    return {}


class TestTheAppIsNotBuiltWithABadId:
    def build_with(self, *, path: str, name: str | None, include_in_schema: bool = True) -> FastAPI:
        def include_api_and_one_more(target: Any, *, prefix: str) -> None:
            include_api(target, prefix=prefix)
            target.add_api_route(path, unnamed, name=name, include_in_schema=include_in_schema, summary="One more")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(server, "include_api", include_api_and_one_more)
            return server.get_application(database_url=TEST_DATABASE_URL)

    def test_a_route_without_a_name(self) -> None:
        with pytest.raises(OpenAPINamingError, match="GET /api/extra/ is named 'unnamed'"):
            self.build_with(path="/api/extra/", name=None)

    @pytest.mark.parametrize("name", ("Users:Register", "users:register new user", "users_register", "users:"))
    def test_a_route_whose_name_is_not_resource_colon_verb_noun(self, name: str) -> None:
        with pytest.raises(OpenAPINamingError, match="name it '<resource>:<verb-noun>'"):
            self.build_with(path="/api/extra/", name=name)

    def test_two_routes_with_one_id(self) -> None:
        with pytest.raises(OpenAPINamingError, match="'users_register_new_user'"):
            self.build_with(path="/api/extra/", name="users:register-new-user")

    def test_a_route_outside_the_document_needs_no_name(self) -> None:
        # as the docs pages' own routes: no client sees their ids
        app = self.build_with(path="/api/extra/", name=None, include_in_schema=False)
        assert "/api/extra/" in {route.path for route in app.routes if isinstance(route, APIRoute)}


class TestBodySchemas:
    def test_each_embedded_body_and_form_has_a_name_of_its_own(self, built: FastAPI) -> None:
        document = built.openapi()
        bodies = {}
        for _, _, operation in operations(document):
            for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
                name = content["schema"]["$ref"].removeprefix("#/components/schemas/")
                if operation["operationId"] in BODIES:
                    bodies[operation["operationId"]] = (media_type, name)
                    assert document["components"]["schemas"][name]["title"] == name
        assert bodies == BODIES
        assert [name for name in document["components"]["schemas"] if name.startswith("Body_")] == []

    def test_a_body_schema_holds_the_model_under_the_routes_key(self, built: FastAPI) -> None:
        schema = built.openapi()["components"]["schemas"]["NewCleaningBody"]
        assert schema["properties"] == {"new_cleaning": {"$ref": "#/components/schemas/CleaningCreate"}}
        assert schema["required"] == ["new_cleaning"]

    def test_the_document_is_fastapis_own_but_for_those_names(self, built: FastAPI) -> None:
        ours = built.openapi()
        fastapis = FastAPI.openapi(server.get_application(database_url=TEST_DATABASE_URL))
        text = json.dumps(fastapis)
        for operation_id, (_, name) in BODIES.items():
            text = text.replace(f'"Body_{operation_id}"', f'"{name}"')
            text = text.replace(f'/Body_{operation_id}"', f'/{name}"')
        assert json.loads(text) == ours
        assert list(ours["components"]["schemas"]) == sorted(ours["components"]["schemas"])

    def test_two_bodies_that_would_have_one_name_stop_the_document(self) -> None:
        def embedding(operation_id: str) -> dict[str, Any]:
            schema = {"$ref": f"#/components/schemas/Body_{operation_id}"}
            return {"operationId": operation_id, "requestBody": {"content": {"application/json": {"schema": schema}}}}

        document = {
            "paths": {"/a/": {"post": embedding("a_create_user")}, "/b/": {"post": embedding("b_create_user")}},
            "components": {
                "schemas": {
                    "Body_a_create_user": {"properties": {"new_user": {}}},
                    "Body_b_create_user": {"properties": {"new_user": {}}},
                }
            },
        }
        with pytest.raises(OpenAPINamingError, match="two schemas would be named 'NewUserBody'"):
            name_body_schemas(document)

    async def test_on_the_wire_the_body_and_its_errors_are_the_tutorials(self, authorized_client: AsyncClient) -> None:
        res = await authorized_client.post(
            "/api/cleanings/", json={"new_cleaning": {"name": "attic", "price": "a lot", "cleaning_type": "spot_clean"}}
        )
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert [error["loc"] for error in res.json()["detail"]] == [["body", "new_cleaning", "price"]]


@pytest.fixture(scope="module")
def generated_client(tmp_path_factory: pytest.TempPathFactory, built: FastAPI) -> Iterator[ModuleType]:
    """The Python client openapi-python-client writes from the document (no formatting hooks: no ruff run)."""
    where = tmp_path_factory.mktemp("generated")
    (where / "openapi.json").write_text(json.dumps(built.openapi()))
    (where / "config.json").write_text(json.dumps({"post_hooks": []}))
    generator = Path(sys.executable).parent / "openapi-python-client"
    subprocess.run(
        [
            generator,
            *("generate", "--path", "openapi.json", "--config", "config.json"),
            *("--meta", "none", "--output-path", "phresh_client"),
        ],
        cwd=where,
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module("phresh_client")
    finally:
        sys.path.remove(str(where))
        for module in [name for name in sys.modules if name.split(".")[0] == "phresh_client"]:
            del sys.modules[module]


class TestAGeneratedPythonClient:
    @pytest.fixture
    async def transports(self, started_app: FastAPI) -> AsyncIterator[list[AsyncClient]]:
        made: list[AsyncClient] = []
        yield made
        for client in made:
            await client.aclose()

    async def test_does_the_readmes_journey(
        self, started_app: FastAPI, generated_client: ModuleType, transports: list[AsyncClient]
    ) -> None:
        def api(module: str) -> Any:
            """The module of one operation: `api("users.users_register_new_user").asyncio(...)`."""
            return importlib.import_module(f"phresh_client.api.{module}")

        models = importlib.import_module("phresh_client.models")
        register_new_user, log_in = api("users.users_register_new_user"), api("users.users_login_email_and_password")
        create_cleaning = api("cleanings.cleanings_create_cleaning")
        create_offer, list_offers = api("offers.offers_create_offer"), api("offers.offers_list_offers_for_cleaning")
        accept_offer = api("offers.offers_accept_offer_from_user")
        evaluate = api("evaluations.evaluations_create_evaluation_for_cleaner")
        get_stats = api("evaluations.evaluations_get_stats_for_cleaner")
        get_feed = api("feed.feed_get_cleaning_feed_for_user")

        def over_asgi(client: Any, headers: dict[str, str] | None = None) -> Any:
            httpx_client = AsyncClient(
                transport=ASGITransport(app=started_app), base_url="http://testserver", headers=headers
            )
            transports.append(httpx_client)
            client.set_async_httpx_client(httpx_client)
            return client

        anyone = over_asgi(generated_client.Client(base_url="http://testserver"))

        async def register(name: str, password: str) -> Any:
            new_user = models.UserCreate(email=f"{name}@example.com", username=name, password=password)
            user = await register_new_user.asyncio(client=anyone, body=models.NewUserBody(new_user=new_user))
            assert isinstance(user, models.UserPublic), user
            form = models.UsersLoginEmailAndPasswordForm(username=f"{name}@example.com", password=password)
            login = await log_in.asyncio(client=anyone, body=form)
            assert isinstance(login, models.AccessToken), login
            bearer = generated_client.AuthenticatedClient(base_url="http://testserver", token=login.access_token)
            return over_asgi(bearer, {"Authorization": f"Bearer {login.access_token}"})

        lebron, brad = await register("lebronjames", "heatcavslakers"), await register("bradpitt", "adastra-adastra")
        new_cleaning = models.CleaningCreate(name="My house", description="Two floors", price=29.99)
        cleaning = await create_cleaning.asyncio(client=lebron, body=models.NewCleaningBody(new_cleaning=new_cleaning))
        assert isinstance(cleaning, models.CleaningPublic), cleaning
        offer = await create_offer.asyncio(cleaning.id, client=brad)
        assert offer.status == models.OfferStatus.PENDING
        offered = await list_offers.asyncio(cleaning.id, client=lebron)
        assert [each.user.username for each in offered] == ["bradpitt"]
        accepted = await accept_offer.asyncio(cleaning.id, "bradpitt", client=lebron)
        assert accepted.status == models.OfferStatus.ACCEPTED
        evaluation_create = models.EvaluationCreate(headline="Spotless", overall_rating=5)
        evaluation = await evaluate.asyncio(
            "bradpitt",
            cleaning.id,
            client=lebron,
            body=models.EvaluationCreateBody(evaluation_create=evaluation_create),
        )
        assert isinstance(evaluation, models.EvaluationPublic), evaluation
        stats = await get_stats.asyncio("bradpitt", client=brad)
        assert (stats.total_evaluations, stats.avg_overall_rating) == (1, 5.0)
        page = await get_feed.asyncio(client=brad, page_chunk_size=2)
        assert [(item.name, item.owner.username) for item in page] == [("My house", "lebronjames")]

        invalid = models.NewCleaningBody(new_cleaning=models.CleaningCreate(name="attic", price=-1))
        refused = await create_cleaning.asyncio(client=lebron, body=invalid)
        assert isinstance(refused, models.HTTPValidationError)
        assert [error.loc for error in refused.detail] == [["body", "new_cleaning", "price"]]
