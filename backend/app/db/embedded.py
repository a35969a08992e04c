"""A private, real PostgreSQL for machines that have none: the `pgserver` package ships the binaries.

The server is shared by every process that attaches to the same data directory (uvicorn, alembic,
pytest) and stops when the last of them exits; the data directory keeps the data between runs.
"""

import warnings
from pathlib import Path

import psycopg
from psycopg import sql


def start_embedded_database(*, data_dir: Path, database: str) -> str:
    """Start (or attach to) the server in `data_dir`, create `database` if needed, return its URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp; that is fine here.
        warnings.simplefilter("ignore")
        import pgserver

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir)
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another process attaching at the same moment created it first
    # pgserver's URL carries an empty password ("postgres:@"); drop it for tidier logs.
    return str(server.get_uri(database)).replace("postgres:@", "postgres@", 1)
