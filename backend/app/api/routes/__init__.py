from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from app.api.openapi import operation_id
from app.api.routes.account import router as account_router
from app.api.routes.cleaners import router as cleaners_router
from app.api.routes.cleanings import router as cleanings_router
from app.api.routes.evaluations import router as evaluations_router
from app.api.routes.feed import router as feed_router
from app.api.routes.health import router as health_router
from app.api.routes.mail import router as mail_router
from app.api.routes.mfa import router as mfa_router
from app.api.routes.notifications import router as notifications_router
from app.api.routes.offers import router as offers_router
from app.api.routes.profiles import router as profiles_router
from app.api.routes.security_events import router as security_events_router
from app.api.routes.users import router as users_router

# Each resource's router, the path it is served under (below API_PREFIX) and its tag.
RESOURCE_ROUTERS: tuple[tuple[APIRouter, str, str], ...] = (
    (cleanings_router, "/cleanings", "cleanings"),
    (users_router, "/users", "users"),
    (mail_router, "/users", "users"),
    (account_router, "/users", "users"),
    (mfa_router, "/users", "users"),
    (notifications_router, "/users", "users"),
    (profiles_router, "/profiles", "profiles"),
    (cleaners_router, "/profiles", "profiles"),
    (offers_router, "/cleanings/{cleaning_id}/offers", "offers"),
    (evaluations_router, "/users/{username}/evaluations", "evaluations"),
    (feed_router, "/feed", "feed"),
    (security_events_router, "/security-events", "security"),
    (health_router, "/health", "health"),
)

# Included elsewhere as one router, it gives its operations the ids the app gives them.
router = APIRouter(generate_unique_id_function=operation_id)
for resource_router, resource_prefix, tag in RESOURCE_ROUTERS:
    router.include_router(resource_router, prefix=resource_prefix, tags=[tag])


def route_settings(route: APIRoute) -> dict[str, Any]:
    """Everything `add_api_route` takes to make `route` again, but its path and endpoint."""
    return {
        "response_model": route.response_model,
        "status_code": route.status_code,
        "tags": list(route.tags),
        "dependencies": route.dependencies,
        "summary": route.summary,
        "description": route.description,
        "response_description": route.response_description,
        "responses": route.responses,
        "deprecated": route.deprecated,
        "methods": route.methods,
        "operation_id": route.operation_id,
        "response_model_include": route.response_model_include,
        "response_model_exclude": route.response_model_exclude,
        "response_model_by_alias": route.response_model_by_alias,
        "response_model_exclude_unset": route.response_model_exclude_unset,
        "response_model_exclude_defaults": route.response_model_exclude_defaults,
        "response_model_exclude_none": route.response_model_exclude_none,
        "include_in_schema": route.include_in_schema,
        "response_class": route.response_class,
        "name": route.name,
        "route_class_override": type(route),
        "callbacks": route.callbacks,
        "openapi_extra": route.openapi_extra,
        "generate_unique_id_function": route.generate_unique_id_function,
        "strict_content_type": route.strict_content_type,
        "max_body_size": route.max_body_size,
        "form_limits": route.form_limits,
    }


def include_flat(target: APIRouter, source: APIRouter, *, prefix: str, tags: Sequence[str] = ()) -> None:
    """Serve `source`'s routes from `target` under `prefix`, each as a route of `target` itself.

    FastAPI keeps an included router as one nested route and matches its routes level by level on
    every request, twice per level (once to find the route, again to run it): behind API_PREFIX
    and a resource's prefix, that was about 100 µs of a GET /api/users/me/ (docs/performance.md).
    A copy made with `add_api_route` from the route's own settings is matched by Starlette's plain
    loop. The copies serve what `include_router` would: the same paths, names, behaviour and
    OpenAPI document (tests/test_routing.py compares the two).
    """
    for route in source.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"only API routes can be included flat, not {route!r}")
        settings = route_settings(route)
        settings["tags"] = [*tags, *settings["tags"]]
        target.add_api_route(prefix + route.path, route.endpoint, **settings)


def include_api(target: APIRouter, *, prefix: str) -> None:
    """Every resource's routes, flat, under `prefix`: what `target.include_router(router, prefix=prefix)` serves."""
    for resource_router, resource_prefix, tag in RESOURCE_ROUTERS:
        include_flat(target, resource_router, prefix=prefix + resource_prefix, tags=[tag])
