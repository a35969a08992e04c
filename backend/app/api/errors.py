"""How failures are answered, and how they are described in the OpenAPI document."""

from typing import Any

from fastapi import Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.routing import Match, Route

from app.models.core import CoreModel
from app.services.hashing import HashingBusyError

DATABASE_UNAVAILABLE = "The database is unavailable right now. Try again shortly."
HASHING_BUSY = "The server is busy checking passwords. Try again in a moment."
CLIENT_CLOSED_REQUEST = 499


async def request_validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """A 422 that says what is wrong and where, without echoing the submitted values.

    FastAPI's default handler copies each offending `input` into the response: that would send a
    rejected password back in clear, and a value that is not valid Unicode cannot even be encoded
    (a 500 instead of a 422).
    """
    assert isinstance(exc, RequestValidationError)
    errors = [{"type": error["type"], "loc": error["loc"], "msg": error["msg"]} for error in exc.errors()]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content=jsonable_encoder({"detail": errors}),
    )


async def method_not_allowed_handler(request: Request, exc: Exception) -> JSONResponse:
    """A 405 whose Allow header lists every method of the path.

    Starlette answers from the first route that matches the path, so where GET and POST of one
    path are two routes, its Allow header names only one of them.
    """
    matching = [
        route
        for route in request.app.router.routes
        if isinstance(route, Route)
        and route.methods
        and route.matches({**request.scope, "method": "GET"})[0] != Match.NONE
    ]
    # A route left out of the schema guards its exact path (POST .../evaluations/stats/ would
    # otherwise reach POST .../evaluations/{cleaning_id}/): only routes of that same path count.
    guarded = {route.path for route in matching if not route.include_in_schema}
    allowed: set[str] = set()
    for route in matching:
        if route.include_in_schema and (not guarded or route.path in guarded):
            allowed |= route.methods or set()
    return JSONResponse(
        status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
        content={"detail": "Method Not Allowed"},
        headers={"Allow": ", ".join(sorted(allowed))},
    )


async def database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """The database is down or restarting: say so (503), and the pool reconnects by itself."""
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": DATABASE_UNAVAILABLE},
        headers={"Retry-After": "5"},
    )


async def hashing_busy_handler(request: Request, exc: Exception) -> JSONResponse:
    """The request would wait longer than HASH_MAX_WAIT_SECONDS for a hashing thread (503), with
    the seconds until the line ahead of a newcomer has drained to that wait."""
    retry_after = exc.retry_after if isinstance(exc, HashingBusyError) else 1
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": HASHING_BUSY},
        headers={"Retry-After": str(retry_after)},
    )


async def client_gone_handler(request: Request, exc: Exception) -> Response:
    """The client closed its connection before its password was checked: nobody reads this answer.

    499, as nginx logs such requests; the server drops it with the connection.
    """
    return Response(status_code=CLIENT_CLOSED_REQUEST)


class ErrorMessage(CoreModel):
    detail: str


_EXAMPLES: dict[int, tuple[str, str]] = {
    400: (
        "The request cannot be carried out as it stands, or its body is not parseable.",
        "There was an error parsing the body",
    ),
    401: ("Not logged in, or the token is not valid.", "Could not validate token credentials."),
    403: ("Logged in, but not allowed to do this.", "Superuser privileges are required for this action."),
    404: ("No such resource.", "No cleaning found with that id."),
    413: ("The request body is too large.", "The request body is larger than 1048576 bytes."),
    429: ("Too many attempts; see the Retry-After header.", "Too many attempts. Try again later."),
    503: ("The database is unavailable, or password hashing is saturated; see Retry-After.", DATABASE_UNAVAILABLE),
}


def error_responses(*codes: int, **examples: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these status codes, each with the `{"detail": ...}` body and an example.

    `examples` overrides the example message of a code, by name: `e404="No user found with that id."`.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        description, example = _EXAMPLES[code]
        example = examples.get(f"e{code}", example)
        responses[code] = {
            "model": ErrorMessage,
            "description": description,
            "content": {"application/json": {"example": {"detail": example}}},
        }
        if code in (401,):
            responses[code]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if code in (429, 503):
            responses[code]["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return responses
