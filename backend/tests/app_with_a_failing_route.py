"""Phresh with one more route, which fails: a live server of it shows how an unhandled error is
logged and answered (tests/test_logging.py). Used by tests only; never part of the app."""

from fastapi import FastAPI

from app.api.server import get_application

FAILING_PATH = "/test-only/fails/"
FAILURE_MESSAGE = "a bug the test put here"


async def fail() -> None:
    raise RuntimeError(FAILURE_MESSAGE)


def with_a_failing_route(app: FastAPI) -> FastAPI:
    app.add_api_route(FAILING_PATH, fail, methods=["POST"], name="test-only:fail", include_in_schema=False)
    return app


app = with_a_failing_route(get_application())
