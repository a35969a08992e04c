"""Database chores for the test suite, the fuzzer and the benchmark: scratch databases, migrations."""

import asyncpg
from alembic import command
from alembic.config import Config as AlembicConfig
from databases import DatabaseURL

from app.core.config import BACKEND_DIR


def libpq_url(url: DatabaseURL) -> str:
    """The URL without a `+driver` suffix, for drivers that speak libpq URLs (asyncpg, psycopg)."""
    return str(url.replace(dialect="postgresql", driver=""))


def sibling_database(url: DatabaseURL, suffix: str) -> DatabaseURL:
    """Another database on the same server, named after this one.

    The path is replaced, never appended to: the URL may end in a query (?host=/socket/dir).
    """
    return url.replace(database=f"{url.database}_{suffix}")


async def recreate_database(url: DatabaseURL) -> None:
    """Drop the database `url` names (closing its connections) and create it empty."""
    name = url.database
    conn = await asyncpg.connect(libpq_url(url.replace(database="postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def alembic_config_for(url: DatabaseURL) -> AlembicConfig:
    alembic_config = AlembicConfig(str(BACKEND_DIR / "alembic.ini"))
    alembic_config.set_main_option("script_location", str(BACKEND_DIR / "app" / "db" / "migrations"))
    alembic_config.attributes["database_url"] = str(url)
    alembic_config.attributes["configure_logger"] = False
    return alembic_config


def migrate(url: DatabaseURL, revision: str = "head") -> None:
    command.upgrade(alembic_config_for(url), revision)
