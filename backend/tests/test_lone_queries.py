"""A statement on its own skips `databases`' Connection (app/db/lone_queries.py): nothing but the cost changes."""

import ast
import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from databases import Database
from databases.backends.postgres import PostgresBackend, PostgresConnection
from databases.core import Connection
from fastapi import FastAPI, status
from httpx import AsyncClient

import app as app_package
from app.db import lone_queries
from app.db.admin import libpq_url
from app.db.repositories.outbox import MailKind, OutboxRepository
from app.db.repositories.sessions import TOUCH_INTERVAL_SECONDS
from app.models.cleaning import CleaningInDB
from app.models.user import UserPublic
from app.services.mail import MAIL_SENDER_TASK
from tests.conftest import TEST_DATABASE_URL, Mailbox, eventually, in_a_request

CALLS: dict[str, Callable[[Database], Awaitable[Any]]] = {
    "fetch_all": lambda db: db.fetch_all("SELECT n, :word AS word FROM generate_series(1, 3) AS n", {"word": "w"}),
    "fetch_one": lambda db: db.fetch_one("SELECT 7 AS n, CAST(:word AS text) AS word", {"word": "w"}),
    "fetch_val": lambda db: db.fetch_val("SELECT 1, CAST(:two AS int)", {"two": 2}, column=1),
    "execute": lambda db: db.execute("SELECT CAST(:value AS text)", {"value": "x"}),
}


SERVICE_SOURCES = [path for path in Path(app_package.__file__).parent.rglob("*.py") if "migrations" not in path.parts]


def code_strings(path: Path) -> list[str]:
    """The string constants of a module, but its docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


# Statements that wait, each on its pooled connection, while a test holds this advisory lock
# (`held_lock`): a test sees how many run side by side without timing them.
LOCK_KEY = 20_006
WAIT_FOR_THE_LOCK = "SELECT pg_backend_pid() FROM pg_advisory_xact_lock_shared(:key)"
WAITING_FOR_THE_LOCK = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted"


@contextlib.asynccontextmanager
async def held_lock() -> AsyncIterator[asyncpg.Connection]:
    """The advisory lock, held for the block on a connection of the test's own (outside the pool,
    whose turns it would take): `WAIT_FOR_THE_LOCK` statements wait until the block ends."""
    holder = await asyncpg.connect(libpq_url(TEST_DATABASE_URL))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        yield holder
    finally:
        await holder.close()  # the session ends, and its lock with it


async def waiting_for_the_lock(holder: asyncpg.Connection, count: int) -> None:
    async def enough() -> bool:
        return bool(await holder.fetchval(WAITING_FOR_THE_LOCK, LOCK_KEY) == count)

    await eventually(enough, f"{count} statements waiting for the lock")


def rows(result: Any) -> Any:
    """Records as plain values, to compare results of the two paths."""
    if isinstance(result, list):
        return [rows(record) for record in result]
    if result is not None and hasattr(result, "_mapping"):
        return (dict(result._mapping), result[0], list(result.keys()))
    return result


class TestTheLibraryUnderneath:
    # What the fast path relies on; a `databases` release that changes any of it fails here first.
    def test_databases_keeps_what_the_fast_path_uses(self, db: Database) -> None:
        assert lone_queries._installed
        assert db._global_connection is None
        assert isinstance(db._backend, PostgresBackend)
        assert not db._connection_map  # no task holds a connection between tests
        connection = db._backend.connection()
        assert isinstance(connection, PostgresConnection)
        assert connection._database is db._backend  # the backend it acquires from
        assert connection._connection is None  # the asyncpg connection, once acquired
        for method in ("acquire", "release", "fetch_all", "fetch_one", "fetch_val", "execute"):
            assert callable(getattr(PostgresConnection, method))
        assert callable(Connection._build_query)


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_a_lone_statement_gives_what_databases_own_path_gives(db: Database, name: str) -> None:
    lone = await CALLS[name](db)
    async with db.connection():  # a task holding a connection takes databases' own path
        usual = await CALLS[name](db)
    assert rows(lone) == rows(usual)
    assert type(lone) is type(usual)


async def test_a_lone_statement_registers_no_connection(db: Database) -> None:
    assert await db.fetch_val("SELECT 1") == 1
    assert not db._connection_map


async def test_every_lone_statement_gives_its_connection_back_even_when_it_fails(db: Database) -> None:
    pool = db._backend._pool
    for _ in range(2 * pool.get_max_size()):  # a connection kept would leave the pool empty halfway
        with pytest.raises(asyncpg.DivisionByZeroError):  # what asyncpg raised, as databases passes it on
            await asyncio.wait_for(db.fetch_val("SELECT 1 / CAST(:zero AS int)", {"zero": 0}), timeout=10)
        assert await asyncio.wait_for(db.fetch_val("SELECT 2"), timeout=10) == 2


async def test_statements_inside_a_transaction_stay_on_its_connection(db: Database) -> None:
    async with db.transaction():
        backend_pid = await db.fetch_val("SELECT pg_backend_pid()")
        await db.execute("CREATE TEMPORARY TABLE seen_in_transaction (n int) ON COMMIT DROP")
        await db.execute("INSERT INTO seen_in_transaction VALUES (1)")
        assert await db.fetch_all("SELECT n FROM seen_in_transaction") != []
        assert await db.fetch_one("SELECT n FROM seen_in_transaction") is not None
        assert await db.fetch_val("SELECT pg_backend_pid()") == backend_pid
        assert len(db._connection_map) == 1


async def test_concurrent_lone_statements_each_take_a_connection(db: Database) -> None:
    pids = await asyncio.gather(*(db.fetch_val("SELECT pg_backend_pid() FROM pg_sleep(0.05)") for _ in range(3)))
    assert len(set(pids)) == 3


class TestSharedConnection:
    """Within shared_connection() (a read request), the task's single statements share one connection."""

    async def test_single_statements_share_one_connection_until_it_is_released(self, db: Database) -> None:
        async with lone_queries.shared_connection() as shared:
            first = await db.fetch_val("SELECT pg_backend_pid()")
            assert await db.fetch_val("SELECT pg_backend_pid()") == first
            record = await db.fetch_one("SELECT pg_backend_pid() AS pid")
            assert record is not None
            assert record["pid"] == first
            await shared.release()
            assert shared.connection is None
            assert not db._connection_map

    async def test_a_transaction_takes_the_shared_connection_over(self, db: Database) -> None:
        async with lone_queries.shared_connection() as shared:
            pid = await db.fetch_val("SELECT pg_backend_pid()")
            async with db.transaction():
                assert await db.fetch_val("SELECT pg_backend_pid()") == pid
                assert shared.connection is None  # the transaction's connection now
            await db.fetch_val("SELECT 1")  # after it, a connection is shared again
            assert shared.connection is not None

    async def test_tasks_sharing_connections_never_hold_two_so_a_full_pool_cannot_deadlock(self, db: Database) -> None:
        async def read_then_write() -> None:
            async with lone_queries.shared_connection():
                await db.fetch_val("SELECT pg_sleep(0.02)")
                async with db.transaction():
                    await db.fetch_val("SELECT 1")
                await db.fetch_val("SELECT 2")

        pool = db._backend._pool
        await asyncio.wait_for(asyncio.gather(*(read_then_write() for _ in range(pool.get_max_size() + 5))), 60)

    async def test_other_tasks_take_the_pool_as_usual(self, db: Database) -> None:
        async with lone_queries.shared_connection():
            mine = await db.fetch_val("SELECT pg_backend_pid()")
            theirs = await asyncio.gather(
                *(db.fetch_val("SELECT pg_backend_pid() FROM pg_sleep(0.05)") for _ in range(2))
            )
            assert mine not in theirs
            assert await db.fetch_val("SELECT pg_backend_pid()") == mine

    async def test_a_failed_statement_keeps_the_connection_shared_and_the_end_gives_it_back(self, db: Database) -> None:
        pool = db._backend._pool
        for _ in range(2 * pool.get_max_size()):  # a connection kept would leave the pool empty halfway
            async with lone_queries.shared_connection():
                pid = await db.fetch_val("SELECT pg_backend_pid()")
                with pytest.raises(asyncpg.DivisionByZeroError):
                    await asyncio.wait_for(db.fetch_val("SELECT 1 / CAST(:zero AS int)", {"zero": 0}), timeout=10)
                assert await db.fetch_val("SELECT pg_backend_pid()") == pid


class TestReadRequests:
    @pytest.fixture
    def connections_taken(self, db: Database, mark_requests: None, monkeypatch: pytest.MonkeyPatch) -> list[object]:
        """Every pooled connection the test's requests take, in order: not those of what works
        beside them, such as the mail sender (`in_a_request`)."""
        taken: list[object] = []
        connection = db._backend.connection

        def counting() -> object:
            made = connection()
            if in_a_request():
                taken.append(made)
            return made

        monkeypatch.setattr(db._backend, "connection", counting)
        return taken

    async def test_a_read_takes_one_connection_for_all_its_statements(
        self, app: FastAPI, authorized_client: AsyncClient, test_cleaning: CleaningInDB, connections_taken: list[object]
    ) -> None:
        path = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=str(test_cleaning.id))
        assert (await authorized_client.get(path)).status_code == status.HTTP_200_OK  # the session was opened
        connections_taken.clear()
        assert (await authorized_client.get(path)).status_code == status.HTTP_200_OK  # the user, then the cleaning
        assert len(connections_taken) == 1

    async def test_a_read_is_counted_alone_while_the_mail_sender_works_and_its_session_is_touched(
        self,
        app: FastAPI,
        started_app: FastAPI,
        db: Database,
        mailbox: Mailbox,  # before the user: their registration's mail is then in it
        authorized_client: AsyncClient,
        test_user: UserPublic,
        test_cleaning: CleaningInDB,
        connections_taken: list[object],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        senders: list[object] = []  # the mail sender's connections, to see that it worked meanwhile
        connection = db._backend.connection

        def counting() -> object:
            made = connection()
            task = asyncio.current_task()
            if task is not None and task.get_name() == MAIL_SENDER_TASK:
                senders.append(made)
            return made

        monkeypatch.setattr(db._backend, "connection", counting)
        path = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=str(test_cleaning.id))
        assert (await authorized_client.get(path)).status_code == status.HTTP_200_OK  # the session was opened
        await mailbox.wait_for(test_user.email)  # the registration's mail
        # The session was last used long enough ago that this request marks it as used.
        last_used = await db.fetch_val(
            "UPDATE sessions SET last_used_at = now() - make_interval(secs => :seconds) RETURNING last_used_at",
            {"seconds": TOUCH_INTERVAL_SECONDS + 1},
        )
        connections_taken.clear()
        senders.clear()
        # The request is held at its cleaning (after the user, and the touch) while the sender
        # sends a mail: no timing decides whether they overlap.
        locker = await asyncpg.connect(libpq_url(TEST_DATABASE_URL))
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE cleanings IN ACCESS EXCLUSIVE MODE")
                request = asyncio.create_task(authorized_client.get(path))

                async def request_waits() -> bool:
                    query = "SELECT count(*) FROM pg_locks WHERE relation = 'cleanings'::regclass AND NOT granted"
                    return bool(await locker.fetchval(query) == 1)

                await eventually(request_waits, "the request waiting for the cleanings")
                message_id = await OutboxRepository(db).enqueue(
                    kind=MailKind.password_reset, recipient=test_user.email, user_id=test_user.id
                )
                started_app.state.mail_sender.wake()

                async def sent() -> bool:
                    query = "SELECT outcome FROM outbox_messages WHERE id = :id"
                    return bool(await db.fetch_val(query, {"id": message_id}) == "sent")

                await eventually(sent, "the mail sent")
                assert not request.done()
        finally:
            await locker.close()
        assert (await asyncio.wait_for(request, 60)).status_code == status.HTTP_200_OK
        assert await db.fetch_val("SELECT last_used_at FROM sessions") > last_used  # it was touched
        assert len(mailbox.to(test_user.email)) == 2
        assert senders  # its claim, the mail's token, its outcome: all while the request ran
        assert len(connections_taken) == 1

    async def test_a_write_takes_a_connection_per_statement(
        self, app: FastAPI, authorized_client: AsyncClient, connections_taken: list[object]
    ) -> None:
        body = {"new_cleaning": {"name": "a room", "price": 12.5}}
        res = await authorized_client.post(app.url_path_for("cleanings:create-cleaning"), json=body)
        assert res.status_code == status.HTTP_201_CREATED
        assert len(connections_taken) >= 2

    async def test_reads_that_fail_give_their_connection_back(
        self, app: FastAPI, authorized_client: AsyncClient, db: Database
    ) -> None:
        path = app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id="999")
        for _ in range(2 * db._backend._pool.get_max_size()):
            res = await asyncio.wait_for(authorized_client.get(path), timeout=10)
            assert res.status_code == status.HTTP_404_NOT_FOUND


class TestThePool:
    """Connections go back to the pool without asyncpg's reset query (app/db/tasks.py::keep_session),
    and tasks wait for them in line (lone_queries._turns)."""

    def test_no_statement_of_the_service_changes_a_session_outside_its_transaction(self) -> None:
        # What makes the reset query unnecessary. Every string in the service's code (its SQL, and
        # the pieces of the f-strings that build it; not its docstrings) is checked.
        strings = [text for path in SERVICE_SOURCES for text in code_strings(path)]
        assert sum("SELECT" in text for text in strings) >= 30  # the SQL was found
        for text in strings:
            for statement in text.split(";"):
                words = statement.split()
                assert not words or words[0] not in {"SET", "RESET", "LISTEN", "DECLARE", "PREPARE", "DISCARD"}, text
            for session_level in ("pg_advisory_lock", "pg_advisory_unlock", "SET SESSION", "LISTEN "):
                assert session_level not in text, text
            # set_config only as SET LOCAL does (its third argument true): it ends with its transaction.
            for call in re.findall(r"set_config\(([^()]*)\)", text):
                assert call.replace(" ", "").endswith(",true"), text
            assert text.count("set_config(") == len(re.findall(r"set_config\(([^()]*)\)", text)), text

    async def test_a_connection_left_in_a_transaction_comes_back_rolled_back(self, db: Database) -> None:
        pool = db._backend._pool
        async with pool.acquire() as connection:
            await connection.execute("BEGIN")
            await connection.execute("CREATE TEMPORARY TABLE left_open (n int)")
        held = [await pool.acquire() for _ in range(pool.get_max_size())]  # every connection, that one too
        try:
            for connection in held:
                assert not connection.is_in_transaction()
                assert await connection.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
        finally:
            for connection in held:
                await pool.release(connection)

    async def test_a_task_that_stops_waiting_for_a_connection_gives_its_turn_back(self, db: Database) -> None:
        size = db._backend._pool.get_max_size()
        lock = {"key": LOCK_KEY}
        async with held_lock() as holder:
            busy = [asyncio.create_task(db.fetch_val(WAIT_FOR_THE_LOCK, lock)) for _ in range(size)]
            await waiting_for_the_lock(holder, size)  # every connection taken
            impatient = [asyncio.create_task(db.fetch_val("SELECT 1")) for _ in range(size)]
            await asyncio.sleep(0)  # each asks for a turn
            assert not any(task.done() for task in impatient)
            for task in impatient:
                task.cancel()
            await asyncio.gather(*impatient, return_exceptions=True)
        await asyncio.wait_for(asyncio.gather(*busy), 60)
        # Every turn came back: as many statements as connections wait side by side again.
        async with held_lock() as holder:
            again = [asyncio.create_task(db.fetch_val(WAIT_FOR_THE_LOCK, lock)) for _ in range(size)]
            await waiting_for_the_lock(holder, size)
        assert len(set(await asyncio.wait_for(asyncio.gather(*again), 60))) == size

    async def test_waiting_statements_get_their_connection_in_the_order_they_asked(
        self, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        size = db._backend._pool.get_max_size()
        numbers: dict[asyncio.Task[Any], int] = {}
        order: list[int] = []  # the numbered statements, as they take a connection (their turn)
        connection = db._backend.connection

        def noting() -> object:
            number = numbers.get(asyncio.current_task())  # type: ignore[arg-type]
            if number is not None:  # not the mail sender, nor any other task
                order.append(number)
            return connection()

        monkeypatch.setattr(db._backend, "connection", noting)
        async with held_lock() as holder:
            busy = [asyncio.create_task(db.fetch_val(WAIT_FOR_THE_LOCK, {"key": LOCK_KEY})) for _ in range(size)]
            await waiting_for_the_lock(holder, size)  # every connection taken
            for number in range(2 * size):  # they ask in this order, each while the others wait
                task = asyncio.create_task(db.fetch_val("SELECT CAST(:n AS int)", {"n": number}))
                numbers[task] = number
                await asyncio.sleep(0)  # it asks for its turn
        await asyncio.wait_for(asyncio.gather(*busy, *numbers), 60)
        assert order == list(range(2 * size))
