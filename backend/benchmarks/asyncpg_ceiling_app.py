"""The real ceiling: a minimal FastAPI app, one `SELECT 1` straight through an asyncpg pool.

The ceiling route of benchmarks/ceiling_app.py goes through `databases`, so it carries
`databases`' own cost, and the app's middleware. This app has neither: no middleware, no
`databases`, no dependency; the route takes a connection from an asyncpg pool sized and configured
as the app's (its very settings, `app.db.tasks.POOL_OPTIONS`: no reset query; turns taken in
order) on the same database, and answers as the other ceiling does. Its start-up objects are
frozen out of the cyclic collector's way, as the app's are. The benchmark serves it with uvicorn,
as a process of its own with the main server's options; it is never part of the public API.

GET /bench/asyncpg-ceiling/   {"one": 1}
GET /api/health/ready/        200 once the pool is open (what scripts/live_server.py waits for)
"""

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request

from app.core.config import DATABASE_URL, DB_POOL_MAX_SIZE
from app.db.admin import libpq_url
from app.db.tasks import POOL_OPTIONS


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(libpq_url(DATABASE_URL), **POOL_OPTIONS)
    # Turns at the pool taken in order, as the app's statements take them (app/db/lone_queries.py).
    app.state.turns = asyncio.Semaphore(DB_POOL_MAX_SIZE)
    # As the app under benchmark does (app/api/server.py): what start-up made is out of the cyclic
    # collector's way, so neither pays for full passes over it.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/bench/asyncpg-ceiling/")
async def asyncpg_ceiling(request: Request) -> dict[str, int]:
    async with request.app.state.turns, request.app.state.pool.acquire() as connection:
        return {"one": int(await connection.fetchval("SELECT 1"))}


@app.get("/api/health/ready/")
async def ready() -> dict[str, str]:
    return {"status": "ready"}
