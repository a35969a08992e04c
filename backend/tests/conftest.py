"""Fixtures: a real, migrated PostgreSQL test database, the app on it, and an HTTP client.

The test database is the configured database's name + "_test" on the same server (the embedded
one by default), dropped and re-created with Alembic at the start of every session; the
development database is never touched.
"""

import os
import secrets
from collections.abc import AsyncIterator

# Before anything from `app` is imported: tests sign with a key of their own and hash cheaply
# (real bcrypt, lower cost). The environment wins over a developer's .env.
os.environ["SECRET_KEY"] = secrets.token_hex(32)
os.environ["BCRYPT_ROUNDS"] = "4"

import asyncpg
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from asgi_lifespan import LifespanManager
from databases import Database, DatabaseURL
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from app.core.config import BACKEND_DIR, DATABASE_URL
from app.db.repositories.cleanings import CleaningsRepository
from app.db.repositories.users import UsersRepository
from app.models.cleaning import CleaningCreate, CleaningInDB
from app.models.user import UserCreate, UserInDB

# Replace the path, never append to the string: the URL may end in a query (?host=/socket/dir).
TEST_DATABASE_URL: DatabaseURL = DATABASE_URL.replace(database=f"{DATABASE_URL.database}_test")


def libpq_url(url: DatabaseURL) -> str:
    """The URL without a `+driver` suffix, for drivers that speak libpq URLs (asyncpg, psycopg)."""
    return str(url.replace(dialect="postgresql", driver=""))


async def recreate_test_database() -> None:
    name = TEST_DATABASE_URL.database
    conn = await asyncpg.connect(libpq_url(TEST_DATABASE_URL.replace(database="postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def migrate(url: DatabaseURL, revision: str = "head") -> None:
    alembic_config = AlembicConfig(str(BACKEND_DIR / "alembic.ini"))
    alembic_config.set_main_option("script_location", str(BACKEND_DIR / "app" / "db" / "migrations"))
    alembic_config.attributes["database_url"] = str(url)
    alembic_config.attributes["configure_logger"] = False
    command.upgrade(alembic_config, revision)


@pytest.fixture(scope="session")
async def apply_migrations() -> None:
    await recreate_test_database()
    migrate(TEST_DATABASE_URL)


@pytest.fixture(scope="session")
def app(apply_migrations: None) -> FastAPI:
    from app.api.server import get_application

    return get_application(database_url=TEST_DATABASE_URL)


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with (
        LifespanManager(app),
        AsyncClient(
            transport=ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Content-Type": "application/json"},
        ) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def db(app: FastAPI, client: AsyncClient) -> Database:
    # `client` runs the app's lifespan, which opens the pool.
    database: Database = app.state._db
    return database


@pytest.fixture(autouse=True)
async def empty_tables(db: Database) -> None:
    """Every test starts from empty tables, so no test depends on another's rows."""
    await db.execute("TRUNCATE users, cleanings RESTART IDENTITY CASCADE")


@pytest.fixture
def new_cleaning() -> CleaningCreate:
    return CleaningCreate(name="test cleaning", description="test description", price=10.00, cleaning_type="spot_clean")


@pytest.fixture
async def test_cleaning(db: Database, new_cleaning: CleaningCreate) -> CleaningInDB:
    return await CleaningsRepository(db).create_cleaning(new_cleaning=new_cleaning)


@pytest.fixture
async def test_user(db: Database) -> UserInDB:
    new_user = UserCreate(email="lebron@james.io", username="lebronjames", password="heatcavslakers")
    return await UsersRepository(db).register_new_user(new_user=new_user)


@pytest.fixture
def env_without_database() -> dict[str, str]:
    """An environment for a child process that names no database and no .env file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "DATABASE_URL"))}
    env["PHRESH_ENV_FILE"] = os.devnull
    return env
