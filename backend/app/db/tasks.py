import asyncio
import logging
import time
from typing import Any

import asyncpg
from databases import Database, DatabaseURL
from fastapi import FastAPI

from app.core.config import (
    DB_CONNECT_TIMEOUT_SECONDS,
    DB_POOL_MAX_SIZE,
    DB_POOL_MIN_SIZE,
    DB_STATEMENT_CACHE_SIZE,
)
from app.db import lone_queries, statements
from app.db.errors import DATABASE_UNAVAILABLE_ERRORS, DatabaseUnreachableError

logger = logging.getLogger(__name__)


async def keep_session(connection: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool, beyond the rollback of an open
    transaction that asyncpg always does: nothing.

    asyncpg's default sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on
    every release: a round trip per request, for PostgreSQL and for the event loop. Phresh never
    changes a session's state outside a transaction (no SET, LISTEN, advisory lock or held cursor;
    tests/test_lone_queries.py checks every string of the service's code for them).
    """


# asyncpg's pool settings (the benchmark's asyncpg ceiling takes the same ones).
POOL_OPTIONS: dict[str, Any] = {
    "min_size": DB_POOL_MIN_SIZE,
    "max_size": DB_POOL_MAX_SIZE,
    "statement_cache_size": DB_STATEMENT_CACHE_SIZE,
    "reset": keep_session,
}


async def connect_to_db(
    app: FastAPI, database_url: DatabaseURL, *, give_up_after: float = DB_CONNECT_TIMEOUT_SECONDS
) -> None:
    """Open the pool, retrying with backoff while the database is unreachable (it may be starting).

    Gives up after `give_up_after` seconds, or at once on an error that waiting cannot fix (a wrong
    password, a missing database), with a DatabaseUnreachableError that says so in one line.
    """
    statements.install()
    lone_queries.install()
    database = Database(str(database_url), **POOL_OPTIONS)
    where = database_url.obscure_password
    deadline = time.monotonic() + give_up_after
    delay = 0.25
    while True:
        try:
            await database.connect()
            break
        except DATABASE_UNAVAILABLE_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise DatabaseUnreachableError(
                    f"cannot reach the database at {where} after {give_up_after:g} s: {exc or type(exc).__name__}"
                ) from exc
            logger.warning("database at %s unreachable (%s); retrying in %.2g s", where, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        except Exception as exc:
            raise DatabaseUnreachableError(f"cannot use the database at {where}: {exc}") from exc
    app.state._db = database


async def close_db_connection(app: FastAPI) -> None:
    database: Database = app.state._db
    await database.disconnect()
