"""A private, real PostgreSQL for machines that have none: the `pgserver` package ships the binaries.

The server is shared by every process that attaches to the same data directory (uvicorn, alembic,
pytest) and stops when the last of them lets go; the data directory keeps the data between runs.
"""

import contextlib
import warnings
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

_server: Any = None  # this process's handle on the server, when it started or joined one


def get_pgserver(data_dir: Path, *, cleanup_mode: str | None = "stop") -> Any:
    """pgserver's handle on the server in `data_dir`, started if need be."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp; that is fine here.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return get_server(data_dir, cleanup_mode=cleanup_mode)


def start_embedded_database(*, data_dir: Path, database: str) -> str:
    """Start (or attach to) the server in `data_dir`, create `database` if needed, return its URL."""
    global _server
    _server = get_pgserver(data_dir)
    _forget_dead_handles(_server)
    with psycopg.connect(_server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists is None:
            # Another process attaching at the same moment may have created it first.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    # pgserver's URL carries an empty password ("postgres:@"); drop it for tidier logs.
    return str(_server.get_uri(database)).replace("postgres:@", "postgres@", 1)


def release_embedded_database() -> None:
    """Let go of the server now; it stops if no other process holds it.

    pgserver lets go at interpreter exit, but uvicorn ends on SIGTERM by re-raising the signal,
    which skips exit handlers: the app's shutdown calls this instead.
    """
    if _server is not None:
        _server.cleanup()


def _forget_dead_handles(server: Any) -> None:
    # pgserver counts the processes attached to a server in a file and stops the server when the
    # last one lets go. A process killed outright never takes itself off that list, and the
    # server would then outlive every later user: drop the entries of processes that are gone.
    with server._lock:
        handles = server.global_process_id_list
        handles.put([pid for pid in handles.get() if psutil.pid_exists(pid)])
