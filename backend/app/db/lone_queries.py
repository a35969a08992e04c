"""A statement on its own goes straight through the pool, underneath `databases`.

`Database.fetch_one()` and its siblings, called by a task that holds no connection of its own
(outside any `connection()` or `transaction()` block: nearly every call the repositories make),
build a `databases` Connection for that one statement: an object with three asyncio locks,
registered for the task in a weak map, entered (the pool's acquire) under one lock, used under
another, left (the pool's release) under the first again, and unregistered. For one statement only
the acquire, the statement and the release do anything; this runs just those, through the
backend's own connection class, so the compiling (app/db/statements.py), the records and the query
log are `databases`' own. A task inside a `connection()` or `transaction()` block, and a database
with `force_rollback`, take `databases`' usual path: a transaction's statements stay on its
connection.

Within `shared_connection()` (a read request: app/api/middleware.py), the task's single statements
share one pooled connection: acquired at the first, given back by `release()` (when the answer
starts) or at the end of the block. Each acquire and release costs the pool's bookkeeping and
asyncpg's reset of the connection (a round trip to PostgreSQL): a page's request makes two or
three statements. The sharing task never holds two pooled connections at once, which could
deadlock a full pool: a `databases` Connection opened meanwhile (a transaction) takes the shared
one over. Other tasks (what the request starts, if anything) take the pool as usual.
"""

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from typing import Any, TypeVar, cast

from databases import Database
from databases.backends.postgres import PostgresBackend, PostgresConnection
from databases.core import Connection

from app.db import statements

ResultT = TypeVar("ResultT")

_installed = False


def _lone_backend(database: Database) -> PostgresBackend | None:
    """The backend, if the calling task may skip `databases`' Connection: it holds none."""
    if database._global_connection is not None:  # force_rollback: one connection for everything
        return None
    task = asyncio.current_task()
    if task is None or task in database._connection_map:
        return None
    backend = database._backend
    return backend if isinstance(backend, PostgresBackend) else None


class SharedConnection:
    """One pooled connection for the single statements of the task that enters this, taken at the
    first of them, given back by `release()` or on leaving. (A class, not a generator-based context
    manager: it is entered on every read request.)"""

    __slots__ = ("backend", "connection", "gate", "released", "task", "token")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.backend: PostgresBackend | None = None
        self.connection: PostgresConnection | None = None
        self.gate: asyncio.Semaphore | None = None  # the turn the connection was taken in
        self.released = False
        self.token: Token[SharedConnection | None] | None = None

    async def __aenter__(self) -> "SharedConnection":
        self.task = asyncio.current_task()
        self.token = _shared.set(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.token is not None
        _shared.reset(self.token)
        await self.release()

    def serves(self, backend: PostgresBackend) -> bool:
        return (
            not self.released
            and self.task is asyncio.current_task()
            and (self.backend is None or self.backend is backend)
        )

    def take(self) -> Any:
        """Hand the acquired asyncpg connection over (to a `databases` Connection of this task)."""
        connection, self.connection, self.backend = self.connection, None, None
        assert connection is not None
        raw = connection._connection
        connection._connection = None
        self._end_turn()  # the transaction gives it back to the pool itself
        return raw

    def _end_turn(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.release()

    async def release(self) -> None:
        """Give the connection back; later statements of the task take the pool as usual."""
        self.released = True
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                await connection.release()
            finally:
                self._end_turn()


_shared: ContextVar[SharedConnection | None] = ContextVar("phresh_shared_connection", default=None)


def shared_connection() -> SharedConnection:
    """`async with shared_connection():` the task's single statements share one pooled connection."""
    return SharedConnection()


def _turns(backend: PostgresBackend) -> asyncio.Semaphore:
    """Turns at the pool, taken in the order they are asked for.

    asyncpg's pool hands a freed connection to a waiting task by waking it, and a task that asks
    in the meantime takes it first: under load some requests lose that race again and again (a
    p99 of 5 x the p50 was measured). Here they wait in line for a turn, one turn per connection.
    """
    turns: asyncio.Semaphore | None = getattr(backend, "_phresh_turns", None)
    if turns is None:
        assert backend._pool is not None
        turns = asyncio.Semaphore(backend._pool.get_max_size())
        backend._phresh_turns = turns
    return turns


async def _acquire(backend: PostgresBackend, turns: asyncio.Semaphore) -> PostgresConnection:
    await turns.acquire()
    try:
        connection = backend.connection()
        await connection.acquire()
    except BaseException:
        turns.release()
        raise
    return connection


async def _on_pooled_connection(
    backend: PostgresBackend, run: Callable[[PostgresConnection], Awaitable[ResultT]]
) -> ResultT:
    share = _shared.get()
    turns = _turns(backend)
    if share is not None and share.serves(backend):
        if share.connection is None:
            share.connection = await _acquire(backend, turns)
            share.backend, share.gate = backend, turns
        return await run(share.connection)
    connection = await _acquire(backend, turns)
    try:
        return await run(connection)
    finally:
        try:
            await connection.release()
        finally:
            turns.release()


def _lone(usual: Callable[..., Awaitable[Any]], name: str) -> Callable[..., Awaitable[Any]]:
    """`Database.<name>(query, values, **options)` (options: fetch_val's `column`), straight through
    the pool when the calling task holds no connection."""

    async def lone(self: Database, query: Any, values: dict[str, Any] | None = None, **options: Any) -> Any:
        backend = _lone_backend(self)
        if backend is None:
            return await usual(self, query, values, **options)
        built = Connection._build_query(query, values)
        return await _on_pooled_connection(backend, lambda connection: getattr(connection, name)(built, **options))

    lone.__name__ = lone.__qualname__ = f"lone_{name}"
    return lone


async def fetch_row(database: Database, sql: str, values: dict[str, Any]) -> Any:
    """`database.fetch_one(sql, values)`, answered with asyncpg's own record (None for no row).

    For the statement of every authenticated request (the session's user): a `databases` Record
    wraps asyncpg's, and reaching it costs the text clause, the compiled statement's lookup and the
    wrapping, about 10 µs (docs/performance.md) for values asyncpg has already decoded (a raw SQL
    statement has no result types for `databases` to convert with). Reads by name (`row["id"]`,
    `row.get(...)`) as the other does. The connection is the one `fetch_one` would use: the task's
    own in a `connection()` or `transaction()` block (and `force_rollback`'s), else one from the
    pool as for a single statement here (shared with the request's other reads); the statement is
    compiled and written to the query log as `databases` does it (app/db/statements.py).
    """
    backend = _lone_backend(database)
    if backend is None:
        async with database.connection() as connection:
            dialect = cast(PostgresConnection, connection._connection)._dialect
            positional_sql, args = statements.positional(dialect, sql, values)
            return await connection.raw_connection.fetchrow(positional_sql, *args)
    positional_sql, args = statements.positional(backend._dialect, sql, values)
    return await _on_pooled_connection(
        backend, lambda connection: connection.raw_connection.fetchrow(positional_sql, *args)
    )


def pool_usage(database: Database) -> tuple[int, int, int]:
    """The pool's connections (open, held), and the tasks waiting for one: in line for a turn
    here, or at asyncpg's pool itself (a transaction's connection comes from there)."""
    backend = database._backend
    pool = getattr(backend, "_pool", None)
    if pool is None:
        return 0, 0, 0
    size = pool.get_size()
    turns: asyncio.Semaphore | None = getattr(backend, "_phresh_turns", None)
    waiting = len(getattr(turns, "_waiters", None) or ()) + len(getattr(pool._queue, "_getters", None) or ())
    return size, size - pool.get_idle_size(), waiting


def install() -> None:
    """Route `databases`' single statements straight through the pool (once per process)."""
    global _installed
    if _installed:
        return
    for name in ("fetch_all", "fetch_one", "fetch_val", "execute"):
        setattr(Database, name, _lone(getattr(Database, name), name))

    acquire = PostgresConnection.acquire

    async def acquire_or_take_shared(self: PostgresConnection) -> None:
        # A `databases` Connection (a transaction) of a task that shares a connection takes that one.
        share = _shared.get()
        if share is not None and share.connection is not None and share.serves(self._database):
            assert self._connection is None, "Connection is already acquired"
            self._connection = share.take()
            return
        await acquire(self)

    PostgresConnection.acquire = acquire_or_take_shared  # type: ignore[method-assign]
    _installed = True
