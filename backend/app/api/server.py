from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from databases import DatabaseURL
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware

from app.api.errors import request_validation_exception_handler
from app.api.routes import router as api_router
from app.core import config
from app.db import tasks
from app.db.embedded import release_embedded_database


def get_application(*, database_url: DatabaseURL | None = None) -> FastAPI:
    """Build the app; `database_url` defaults to the configured one (tests pass their own)."""
    url = database_url or config.DATABASE_URL

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await tasks.connect_to_db(app, url)
        try:
            yield
        finally:
            await tasks.close_db_connection(app)
            if database_url is None:
                # The configured database may be the embedded one, held by this process.
                release_embedded_database()

    app = FastAPI(title=config.PROJECT_NAME, version=config.VERSION, lifespan=lifespan)
    # Tokens travel in the Authorization header, not in cookies, so any origin may call the API.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
    )
    app.add_exception_handler(RequestValidationError, request_validation_exception_handler)
    app.include_router(api_router, prefix=config.API_PREFIX)
    return app


app = get_application()
