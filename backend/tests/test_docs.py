"""The OpenAPI document and the docs pages: what a reader of the API sees."""

import pytest
from fastapi import FastAPI, status
from httpx import AsyncClient

LOCKED = {
    ("get", "/api/users/me/"),
    ("put", "/api/users/me/"),
    ("put", "/api/users/me/password/"),
    ("delete", "/api/users/me/"),
    ("get", "/api/users/me/export/"),
    ("get", "/api/users/"),
    ("post", "/api/users/{user_id}/deactivate/"),
    ("post", "/api/users/{user_id}/reactivate/"),
    ("get", "/api/security-events/"),
    ("get", "/api/cleanings/"),
    ("post", "/api/cleanings/"),
    ("get", "/api/cleanings/search/"),
    ("get", "/api/cleanings/{cleaning_id}/"),
    ("put", "/api/cleanings/{cleaning_id}/"),
    ("delete", "/api/cleanings/{cleaning_id}/"),
    ("get", "/api/profiles/{username}/"),
    ("get", "/api/profiles/me/"),
    ("put", "/api/profiles/me/"),
    ("get", "/api/profiles/"),
    ("post", "/api/cleanings/{cleaning_id}/offers/"),
    ("get", "/api/cleanings/{cleaning_id}/offers/"),
    ("put", "/api/cleanings/{cleaning_id}/offers/"),
    ("delete", "/api/cleanings/{cleaning_id}/offers/"),
    ("get", "/api/cleanings/{cleaning_id}/offers/{username}/"),
    ("put", "/api/cleanings/{cleaning_id}/offers/{username}/"),
    ("post", "/api/users/{username}/evaluations/{cleaning_id}/"),
    ("get", "/api/users/{username}/evaluations/{cleaning_id}/"),
    ("get", "/api/users/{username}/evaluations/"),
    ("get", "/api/users/{username}/evaluations/stats/"),
    ("get", "/api/feed/cleanings/"),
    ("post", "/api/users/logout/"),
    ("get", "/api/users/me/sessions/"),
    ("delete", "/api/users/me/sessions/{session_id}/"),
    ("post", "/api/users/{user_id}/end-sessions/"),
    ("post", "/api/users/me/verification/"),
    ("get", "/api/users/me/mfa/"),
    ("post", "/api/users/me/mfa/enrolment/"),
    ("post", "/api/users/me/mfa/enrolment/confirm/"),
    ("post", "/api/users/me/mfa/recovery-codes/"),
    ("post", "/api/users/me/mfa/disable/"),
    ("post", "/api/users/{user_id}/mfa/reset/"),
    ("get", "/api/users/me/notifications/"),
    ("put", "/api/users/me/notifications/"),
}


@pytest.fixture
async def openapi(app: FastAPI, client: AsyncClient) -> dict[str, object]:
    res = await client.get("/openapi.json")
    assert res.status_code == status.HTTP_200_OK
    document: dict[str, object] = res.json()
    return document


def operations(openapi: dict[str, object]) -> list[tuple[str, str, dict[str, object]]]:
    paths = openapi["paths"]
    assert isinstance(paths, dict)
    return [(method, path, op) for path, item in paths.items() for method, op in item.items()]


class TestOpenAPIDocument:
    def test_swagger_ui_shows_what_each_operation_does_in_words(self, openapi: dict[str, object]) -> None:
        summaries = {(method, path): op["summary"] for method, path, op in operations(openapi)}
        assert summaries[("post", "/api/users/")] == "Register"
        assert summaries[("post", "/api/users/login/token/")] == "Log in"
        assert summaries[("get", "/api/cleanings/")] == "List my cleanings"
        assert summaries[("put", "/api/profiles/me/")] == "Update my profile"

    def test_every_route_has_a_summary_a_tag_and_a_success_model(self, openapi: dict[str, object]) -> None:
        for method, path, op in operations(openapi):
            assert op.get("summary"), (method, path)
            assert op.get("tags"), (method, path)
            # for people: a few words, not the route's name ("Cleanings:List-All-User-Cleanings")
            summary = str(op["summary"])
            assert ":" not in summary and len(summary.split()) <= 6, (method, path, summary)
            success = next(code for code in op["responses"] if code.startswith("2"))  # type: ignore[attr-defined]
            if success == "204":  # no content, nothing to describe
                assert "content" not in op["responses"][success], (method, path)  # type: ignore[index]
                continue
            content = op["responses"][success]["content"]["application/json"]  # type: ignore[index]
            assert content["schema"], (method, path)

    def test_every_error_response_has_an_example_body(self, openapi: dict[str, object]) -> None:
        for method, path, op in operations(openapi):
            for code, response in op["responses"].items():  # type: ignore[attr-defined]
                if code in ("400", "401", "403", "404", "413", "429", "503") and path != "/api/health/ready/":
                    example = response["content"]["application/json"]["example"]
                    assert isinstance(example["detail"], str) and example["detail"], (method, path, code)

    def test_locked_routes_declare_the_bearer_scheme_so_swagger_shows_a_padlock(
        self, openapi: dict[str, object]
    ) -> None:
        schemes = openapi["components"]["securitySchemes"]  # type: ignore[index]
        assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/api/users/login/token/"
        for method, path, op in operations(openapi):
            locked = bool(op.get("security"))
            assert locked == ((method, path) in LOCKED), (method, path)
            if locked:
                assert "401" in op["responses"], (method, path)  # type: ignore[operator]

    def test_the_documented_errors_are_the_ones_each_route_can_give(self, openapi: dict[str, object]) -> None:
        codes = {(method, path): set(op["responses"]) for method, path, op in operations(openapi)}  # type: ignore[call-overload]
        assert {"400", "413", "429", "503"} <= codes[("post", "/api/users/")]
        assert {"401", "429", "503"} <= codes[("post", "/api/users/login/token/")]
        assert {"401", "403", "404", "503"} <= codes[("delete", "/api/cleanings/{cleaning_id}/")]
        assert {"401", "403", "503"} <= codes[("get", "/api/users/")]


class TestDocsPages:
    @pytest.mark.parametrize("page, asset", (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")))
    async def test_the_docs_load_their_assets_from_this_server(
        self, client: AsyncClient, page: str, asset: str
    ) -> None:
        html = (await client.get(page)).text
        assert f"/static-offline-docs/{asset}" in html
        assert "cdn" not in html.lower() and "googleapis" not in html
        res = await client.get(f"/static-offline-docs/{asset}")
        assert res.status_code == status.HTTP_200_OK and len(res.content) > 100_000
