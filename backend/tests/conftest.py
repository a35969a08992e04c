"""Fixtures: a real, migrated PostgreSQL test database, the app on it, and an HTTP client.

The test database is the configured database's name + "_test" on the same server (the embedded
one by default), dropped and re-created with Alembic at the start of every session; the
development database is never touched.
"""

import os
import secrets
from collections.abc import AsyncIterator, Callable

# Before anything from `app` is imported: tests sign with a key of their own and hash cheaply
# (real bcrypt, lower cost). The environment wins over a developer's .env.
os.environ["SECRET_KEY"] = secrets.token_hex(32)
os.environ["BCRYPT_ROUNDS"] = "4"

import pytest
from asgi_lifespan import LifespanManager
from databases import Database, DatabaseURL
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from app.core.config import DATABASE_URL, JWT_TOKEN_PREFIX, SECRET_KEY
from app.db.admin import migrate, recreate_database, sibling_database
from app.db.repositories.cleanings import CleaningsRepository
from app.db.repositories.users import UsersRepository
from app.models.cleaning import CleaningCreate, CleaningInDB
from app.models.user import UserCreate, UserInDB
from app.services import auth_service

TEST_DATABASE_URL: DatabaseURL = sibling_database(DATABASE_URL, "test")


@pytest.fixture(scope="session")
async def apply_migrations() -> None:
    await recreate_database(TEST_DATABASE_URL)
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
    await db.execute("TRUNCATE users, cleanings, security_events, rate_limit_hits RESTART IDENTITY CASCADE")


def auth_headers(user: UserInDB) -> dict[str, str]:
    token = auth_service.create_access_token_for_user(user=user, secret_key=str(SECRET_KEY))
    return {"Authorization": f"{JWT_TOKEN_PREFIX} {token}"}


@pytest.fixture
async def client_for(app: FastAPI, client: AsyncClient) -> AsyncIterator[Callable[[UserInDB], AsyncClient]]:
    """Make clients that send a user's bearer token (the shared `client` stays anonymous)."""
    clients: list[AsyncClient] = []

    def make(user: UserInDB) -> AsyncClient:
        authorized = AsyncClient(
            transport=ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Content-Type": "application/json", **auth_headers(user)},
        )
        clients.append(authorized)
        return authorized

    yield make
    for authorized in clients:
        await authorized.aclose()


@pytest.fixture
async def client_from(app: FastAPI, client: AsyncClient) -> AsyncIterator[Callable[[str], AsyncClient]]:
    """Make anonymous clients that connect from a given address (for per-address limits)."""
    clients: list[AsyncClient] = []

    def make(address: str) -> AsyncClient:
        transport = ASGITransport(app=app, client=(address, 40000))
        remote = AsyncClient(
            transport=transport, base_url="http://testserver", headers={"Content-Type": "application/json"}
        )
        clients.append(remote)
        return remote

    yield make
    for remote in clients:
        await remote.aclose()


async def log_in(app: FastAPI, client: AsyncClient, username: str, password: str) -> Response:
    """POST the OAuth2 password form, as Swagger UI's Authorize button does."""
    return await client.post(
        app.url_path_for("users:login-email-and-password"),
        data={"username": username, "password": password},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


@pytest.fixture
def authorized_client(client_for: Callable[[UserInDB], AsyncClient], test_user: UserInDB) -> AsyncClient:
    return client_for(test_user)


async def create_user(db: Database, *, email: str, username: str, password: str, superuser: bool = False) -> UserInDB:
    user_repo = UsersRepository(db)
    user = await user_repo.register_new_user(new_user=UserCreate(email=email, username=username, password=password))
    if superuser:
        promoted = await user_repo.make_superuser(id=user.id)
        assert promoted is not None
        return promoted
    return user


@pytest.fixture
def new_cleaning() -> CleaningCreate:
    return CleaningCreate(name="test cleaning", description="test description", price=10.00, cleaning_type="spot_clean")


@pytest.fixture
async def test_cleaning(db: Database, new_cleaning: CleaningCreate, test_user: UserInDB) -> CleaningInDB:
    return await CleaningsRepository(db).create_cleaning(new_cleaning=new_cleaning, requesting_user=test_user)


@pytest.fixture
async def test_user(db: Database) -> UserInDB:
    return await create_user(db, email="lebron@james.io", username="lebronjames", password="heatcavslakers")


@pytest.fixture
async def test_user2(db: Database) -> UserInDB:
    return await create_user(db, email="serena@williams.io", username="serenawilliams", password="tennistwins")


@pytest.fixture
async def test_superuser(db: Database) -> UserInDB:
    return await create_user(
        db, email="admin@phresh.io", username="phresh_admin", password="keys-to-it-all", superuser=True
    )


@pytest.fixture
def env_without_database() -> dict[str, str]:
    """An environment for a child process that names no database and no .env file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "DATABASE_URL"))}
    env["PHRESH_ENV_FILE"] = os.devnull
    return env
