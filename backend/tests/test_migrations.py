"""Alembic owns the schema: every revision applies to a database that already holds data."""

from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic import command

from app.db.admin import alembic_config_for, libpq_url, migrate, recreate_database, sibling_database
from tests.conftest import TEST_DATABASE_URL

MIGRATIONS_DATABASE_URL = sibling_database(TEST_DATABASE_URL, "migrations")
FIRST_REVISION = "2a6f3c1b9d04"
OWNERS_REVISION = "7c41e0d2a9b5"
BEFORE_PROFILES_REVISION = "b3d9f15e6a72"


@pytest.fixture
async def scratch_database() -> AsyncIterator[asyncpg.Connection]:
    await recreate_database(MIGRATIONS_DATABASE_URL)
    migrate(MIGRATIONS_DATABASE_URL, FIRST_REVISION)
    conn = await asyncpg.connect(libpq_url(MIGRATIONS_DATABASE_URL))
    yield conn
    await conn.close()


class TestMigrations:
    async def test_existing_cleanings_and_users_survive_the_owner_revision(
        self, scratch_database: asyncpg.Connection
    ) -> None:
        conn = scratch_database
        await conn.execute(
            "INSERT INTO users (username, email, password, salt) VALUES ('early', 'early@example.com', 'h', 's')"
        )
        await conn.execute("INSERT INTO cleanings (name, price) VALUES ('from part 5', 12.5)")

        migrate(MIGRATIONS_DATABASE_URL)

        cleaning = await conn.fetchrow("SELECT name, price, owner FROM cleanings")
        assert (cleaning["name"], float(cleaning["price"]), cleaning["owner"]) == ("from part 5", 12.5, None)
        user = await conn.fetchrow("SELECT username, token_version FROM users")
        assert (user["username"], user["token_version"]) == ("early", 0)

    async def test_every_revision_downgrades_and_upgrades_again(self, scratch_database: asyncpg.Connection) -> None:
        migrate(MIGRATIONS_DATABASE_URL)
        command.downgrade(alembic_config_for(MIGRATIONS_DATABASE_URL), "base")
        tables = await scratch_database.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('users', 'cleanings')"
        )
        assert tables == 0
        migrate(MIGRATIONS_DATABASE_URL)
        columns = await scratch_database.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'cleanings'"
        )
        assert "owner" in {row["column_name"] for row in columns}

    async def test_names_that_differ_only_in_case_are_kept_and_renamed_apart(
        self, scratch_database: asyncpg.Connection
    ) -> None:
        conn = scratch_database
        migrate(MIGRATIONS_DATABASE_URL, OWNERS_REVISION)
        for username, email in (("Bob", "bob@example.com"), ("bob", "BOB@example.com"), ("alice", "alice@example.com")):
            await conn.execute(
                "INSERT INTO users (username, email, password, salt) VALUES ($1, $2, 'h', 's')", username, email
            )

        migrate(MIGRATIONS_DATABASE_URL)

        users = [tuple(row) for row in await conn.fetch("SELECT id, username, email FROM users ORDER BY id")]
        assert users == [
            (1, "Bob", "bob@example.com"),  # the oldest keeps its names
            (2, "bob_2", "duplicate-2@phresh.invalid"),  # the later one is renamed, not deleted
            (3, "alice", "alice@example.com"),
        ]
        event = await conn.fetchrow("SELECT kind, user_id, detail FROM security_events")
        assert tuple(event) == ("email_deduplicated", 2, "email was BOB@example.com")

    async def test_users_from_before_profiles_get_one_each(self, scratch_database: asyncpg.Connection) -> None:
        conn = scratch_database
        migrate(MIGRATIONS_DATABASE_URL, BEFORE_PROFILES_REVISION)
        for name in ("first", "second", "third"):
            await conn.execute(
                "INSERT INTO users (username, email, password, salt) VALUES ($1, $2, 'h', 's')",
                name,
                f"{name}@example.com",
            )

        migrate(MIGRATIONS_DATABASE_URL)

        rows = await conn.fetch(
            "SELECT u.username, p.full_name, p.bio FROM users u JOIN profiles p ON p.user_id = u.id ORDER BY u.id"
        )
        assert [tuple(row) for row in rows] == [("first", None, None), ("second", None, None), ("third", None, None)]
        # and from now on the database keeps it so
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await conn.execute(
                "INSERT INTO users (username, email, password, salt) VALUES ('x', 'x@example.com', 'h', 's')"
            )

        # the revision goes down and up again with the users in place
        command.downgrade(alembic_config_for(MIGRATIONS_DATABASE_URL), BEFORE_PROFILES_REVISION)
        assert await conn.fetchval("SELECT to_regclass('profiles')") is None
        await conn.execute(
            "INSERT INTO users (username, email, password, salt) VALUES ('x', 'x@example.com', 'h', 's')"
        )
        migrate(MIGRATIONS_DATABASE_URL)
        assert await conn.fetchval("SELECT count(*) FROM users u JOIN profiles p ON p.user_id = u.id") == 4
