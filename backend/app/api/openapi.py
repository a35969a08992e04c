"""The names a client generated from the OpenAPI document is written with.

openapi-python-client, openapi-typescript and their kind name a function after each operation's
`operationId` and a class after each schema. FastAPI's defaults make both from the route's name,
path and method (`users_register_new_user_api_users__post`, and `Body_` + that for the body of a
route that embeds its model, as every tutorial route does: `{"new_user": {...}}`). Here the id is
the route's name, and each such body gets a schema named for what it holds. Nothing on the wire
changes: the routes, their parameters, and so their bodies and validation errors, are untouched.
"""

import re
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.utils import generate_unique_id
from starlette.routing import BaseRoute

# "<resource>:<verb-noun>", as every route of the API is named (app.url_path_for uses the same name).
ROUTE_NAME = re.compile(r"[a-z]+(?:-[a-z]+)*:[a-z]+(?:-[a-z]+)*")
SCHEMA_REF = "#/components/schemas/"
GENERATED_BODY = "Body_"  # FastAPI's prefix for the model it makes of a route's embedded body fields
FORM_MEDIA_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class OpenAPINamingError(Exception):
    """A route or body that the document cannot name well: raised while the app is built."""


def operation_id(route: APIRoute) -> str:
    """The route's name with `:` and `-` as `_`: `users:register-new-user` -> `users_register_new_user`.

    FastAPI's `generate_unique_id_function`. Snake case rather than camel case: openapi-python-client
    turns any id into snake case for its modules and functions, so `usersRegisterNewUser` would give
    the same `api/users/users_register_new_user.py` and `.sync(...)` (tried: the two clients are
    identical), while openapi-typescript uses the id only as a key, `operations["users_register_new_user"]`
    (openapi-fetch calls by method and path and never shows it): there the snake case id reads as the
    route's name with one separator for another, which is what a reader of the docs and tests knows.
    """
    if not route.include_in_schema:
        # Absent from the document (the docs pages themselves, a hidden route): no client sees it.
        return generate_unique_id(route)
    if not ROUTE_NAME.fullmatch(route.name):
        raise OpenAPINamingError(
            f"{', '.join(sorted(route.methods or ()))} {route.path} is named {route.name!r}: name it "
            "'<resource>:<verb-noun>' (name=...), its operationId in the OpenAPI document is made from it"
        )
    return route.name.replace(":", "_").replace("-", "_")


def check_operation_ids(routes: Iterable[BaseRoute]) -> None:
    """Raise unless every operation of `routes` (the app's, served flat) has an id of its own.

    FastAPI itself only warns, as it writes the document, and a generated client then loses one of
    the two operations. The document is checked again as it is written (`use_named_body_schemas`),
    for routes included some other way.
    """
    check_ids(
        (route.unique_id, f"{method} {route.path}")
        for route in routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in sorted(route.methods or ())
    )


def check_ids(operations: Iterable[tuple[str, str]]) -> None:
    """Raise unless each (operationId, "METHOD path") has an id no other has, and a Python identifier."""
    seen: dict[str, str] = {}
    for operation_id, here in operations:
        if not operation_id.isidentifier():
            raise OpenAPINamingError(f"the operationId of {here}, {operation_id!r}, is not an identifier")
        if (first := seen.setdefault(operation_id, here)) != here:
            raise OpenAPINamingError(f"{here} and {first} have the same operationId, {operation_id!r}")


def pascal_case(words: str) -> str:
    return "".join(word.capitalize() for word in re.split(r"[_\-]", words))


def body_schema_name(*, fields: list[str], media_type: str, operation_id: str) -> str:
    """A JSON body of one embedded field is named for it (`new_cleaning` -> `NewCleaningBody`); a form,
    or a body of several fields, for its operation (`users_login_email_and_password` ->
    `UsersLoginEmailAndPasswordForm`)."""
    if media_type in FORM_MEDIA_TYPES:
        return pascal_case(operation_id) + "Form"
    if len(fields) == 1:
        return pascal_case(fields[0]) + "Body"
    return pascal_case(operation_id) + "Body"


def renamed_refs(node: Any, refs: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: refs.get(value, value) if key == "$ref" and isinstance(value, str) else renamed_refs(value, refs)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [renamed_refs(value, refs) for value in node]
    return node


def name_body_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with each `Body_<operationId>` schema renamed (its key, its title and every $ref to it)."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    names: dict[str, str] = {}
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
                generated = content.get("schema", {}).get("$ref", "").removeprefix(SCHEMA_REF)
                if not generated.startswith(GENERATED_BODY):
                    continue
                name = body_schema_name(
                    fields=list(schemas[generated].get("properties", {})),
                    media_type=media_type,
                    operation_id=operation["operationId"],
                )
                if name in schemas or name in names.values():
                    raise OpenAPINamingError(f"two schemas would be named {name!r}, one the body of {generated}")
                names[generated] = name
    if not names:
        return document
    refs = {SCHEMA_REF + generated: SCHEMA_REF + name for generated, name in names.items()}
    renamed: dict[str, Any] = renamed_refs(document, refs)
    bodies = {names.get(key, key): schema for key, schema in renamed["components"]["schemas"].items()}
    for name in names.values():
        bodies[name]["title"] = name
    renamed["components"]["schemas"] = dict(sorted(bodies.items()))  # FastAPI's order: by name
    return renamed


def use_named_body_schemas(app: FastAPI) -> None:
    """Make `app.openapi()` (and so /openapi.json and /docs) name every embedded body's schema."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI's own keeps the document it last wrote (ours, once named: naming it again changes
        # nothing) until the routes change.
        document = build()
        check_ids(
            (operation["operationId"], f"{method.upper()} {path}")
            for path, item in document.get("paths", {}).items()
            for method, operation in item.items()
        )
        app.openapi_schema = name_body_schemas(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document
