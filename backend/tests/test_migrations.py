"""Alembic owns the schema: every revision applies to a database that already holds data."""

import ast
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from app.api.routes.health import MIGRATIONS_HEAD
from app.api.server import get_application
from app.core.config import BACKEND_DIR
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


# --- Readiness across releases -------------------------------------------------------------------

LATER_RELEASE = '''"""a later release's revision, which this code has never seen"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("ALTER TABLE users ADD COLUMN {column} text"))


def downgrade() -> None:
    op.execute(sa.text("ALTER TABLE users DROP COLUMN {column}"))
'''


def config_with_revision(tmp_path: Path, *, revision: str, down_revision: str) -> AlembicConfig:
    """Alembic as a later release runs it: our revisions plus one more, in a folder of its own."""
    folder = tmp_path / f"versions_{revision}"
    folder.mkdir()
    source = LATER_RELEASE.format(revision=revision, down_revision=down_revision, column=f"col_{revision}")
    (folder / f"{revision}_later.py").write_text(source)
    alembic_config = alembic_config_for(MIGRATIONS_DATABASE_URL)
    ours = BACKEND_DIR / "app" / "db" / "migrations" / "versions"
    alembic_config.set_main_option("version_locations", os.pathsep.join([str(ours), str(folder)]))
    return alembic_config


async def readiness() -> tuple[int, dict[str, str]]:
    """What this code's readiness route says of the scratch database."""
    app = get_application(database_url=MIGRATIONS_DATABASE_URL)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            res = await client.get(app.url_path_for("health:ready"))
    return res.status_code, res.json()


class TestReadinessAcrossReleases:
    async def test_ready_at_this_codes_newest_revision(self, scratch_database: asyncpg.Connection) -> None:
        migrate(MIGRATIONS_DATABASE_URL)
        assert await readiness() == (200, {"status": "ready", "database": "ok", "migrations": MIGRATIONS_HEAD})

    async def test_ready_once_a_later_release_has_migrated_and_again_after_it_is_undone(
        self, scratch_database: asyncpg.Connection, tmp_path: Path
    ) -> None:
        migrate(MIGRATIONS_DATABASE_URL)
        later = config_with_revision(tmp_path, revision="fe1a7e000001", down_revision=MIGRATIONS_HEAD)
        command.upgrade(later, "heads")
        assert await scratch_database.fetchval("SELECT version_num FROM alembic_version") == "fe1a7e000001"

        status_code, body = await readiness()
        assert status_code == 200 and body["status"] == "ready"
        assert body["migrations"] == f"fe1a7e000001, after this code's {MIGRATIONS_HEAD}"

        command.downgrade(later, MIGRATIONS_HEAD)
        assert (
            await scratch_database.fetchval("SELECT count(*) FROM schema_revisions WHERE revision = 'fe1a7e000001'")
            == 0
        )
        assert (await readiness())[0] == 200

    async def test_not_ready_while_the_database_is_behind(self, scratch_database: asyncpg.Connection) -> None:
        migrate(MIGRATIONS_DATABASE_URL, f"{MIGRATIONS_HEAD}-1")
        status_code, body = await readiness()
        assert status_code == 503 and body["status"] == "unavailable" and body["database"] == "ok"
        assert "behind this code's" in body["migrations"]

    async def test_not_ready_on_a_revision_that_does_not_come_after_this_codes(
        self, scratch_database: asyncpg.Connection, tmp_path: Path
    ) -> None:
        # Another line of history from our newest revision's parent: a revision we have never seen,
        # whose history does not hold our newest one.
        parent = ScriptDirectory.from_config(alembic_config_for(MIGRATIONS_DATABASE_URL)).get_revision(MIGRATIONS_HEAD)
        assert parent is not None and isinstance(parent.down_revision, str)
        other = config_with_revision(tmp_path, revision="0e7e40000001", down_revision=parent.down_revision)
        command.upgrade(other, "0e7e40000001")

        status_code, body = await readiness()
        assert status_code == 503
        assert body["migrations"] == f"0e7e40000001, not a later revision of this code's {MIGRATIONS_HEAD}"

    async def test_not_ready_on_another_applications_database(self, scratch_database: asyncpg.Connection) -> None:
        command.downgrade(alembic_config_for(MIGRATIONS_DATABASE_URL), "base")
        await scratch_database.execute("INSERT INTO alembic_version (version_num) VALUES ('5ca1ab1e0000')")
        assert (await readiness())[0] == 503
        await scratch_database.execute("DROP TABLE alembic_version")
        status_code, body = await readiness()
        assert status_code == 503 and body["migrations"].startswith("not migrated")


# --- Expand, then contract a release later -------------------------------------------------------

# The newest revision when the rule was made. Every revision after it keeps the release before it
# working (docs/deployment.md): it may add, never take away or tighten what that release's queries
# use, unless it declares itself the contract step of an expand that shipped at least one release
# earlier (`contracts = "<that revision>"`).
RULE_BASELINE = "f3b8d2a6c915"

DESTRUCTIVE_OPS = {"drop_column", "drop_table", "rename_table"}
DESTRUCTIVE_SQL = [
    (re.compile(r"\bDROP\s+(TABLE|COLUMN)\b", re.I), "drops a table or column"),
    (re.compile(r"\bRENAME\b", re.I), "renames"),
    (re.compile(r"\bALTER\s+COLUMN\s+\S+\s+(SET\s+NOT\s+NULL|(SET\s+DATA\s+)?TYPE)\b", re.I), "tightens a column"),
    (
        re.compile(r"\bADD\s+(COLUMN\s+)?(?:(?!\bDEFAULT\b)[^,;])*\bNOT\s+NULL\b(?![^,;]*\bDEFAULT\b)", re.I),
        "adds a NOT NULL column without a default",
    ),
]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def destructive_operations(source: str) -> list[str]:
    """What the revision's upgrade() does that the release before it may not survive."""
    module = ast.parse(source)
    upgrade = next((node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "upgrade"), None)
    found: list[str] = []
    for call in ast.walk(upgrade) if upgrade else ():
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            continue
        name, keywords = call.func.attr, _keywords(call)
        on_op = isinstance(call.func.value, ast.Name) and call.func.value.id == "op"
        if on_op and name in DESTRUCTIVE_OPS:
            found.append(f"op.{name}")
        elif on_op and name == "alter_column":
            if "type_" in keywords or "new_column_name" in keywords:
                found.append("op.alter_column changes a type or a name")
            if _is_false(keywords.get("nullable")) and "server_default" not in keywords:
                found.append("op.alter_column makes a column NOT NULL")
        elif name == "Column" and _is_false(keywords.get("nullable")) and "server_default" not in keywords:
            found.append("a NOT NULL column without a server default")
        elif on_op and name == "execute":
            sql = " ".join(
                node.value for node in ast.walk(call) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            )
            found += [f"SQL that {what}" for pattern, what in DESTRUCTIVE_SQL if pattern.search(sql)]
    return found


def contracts_marker(source: str) -> str | None:
    """The earlier revision a contract step names (`contracts = "<revision>"` at module level)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        else:
            continue
        value = node.value
        if isinstance(target, ast.Name) and target.id == "contracts" and isinstance(value, ast.Constant):
            return str(value.value)
    return None


def rule_violations(source: str, *, ancestors: set[str]) -> list[str]:
    """Why a revision breaks the rule: destructive and not a contract of an expand an earlier release shipped."""
    found = destructive_operations(source)
    if not found:
        return []
    marker = contracts_marker(source)
    if marker is None:
        return [*found, 'and no `contracts = "<earlier revision>"` marker']
    if marker not in ancestors:
        return [*found, f"and `contracts` names {marker}, which is not an earlier revision"]
    return []


class TestExpandThenContract:
    def test_every_revision_after_the_baseline_keeps_the_release_before_it_working(self) -> None:
        scripts = ScriptDirectory.from_config(alembic_config_for(MIGRATIONS_DATABASE_URL))
        checked = []
        for script in scripts.walk_revisions():
            if script.revision == RULE_BASELINE:
                break
            ancestors = {rev.revision for rev in scripts.iterate_revisions(script.revision, "base")} - {script.revision}
            assert RULE_BASELINE in ancestors
            problems = rule_violations(Path(script.path).read_text(), ancestors=ancestors)
            assert not problems, f"{script.revision}: {'; '.join(problems)}"
            checked.append(script.revision)
        else:
            pytest.fail(f"the baseline {RULE_BASELINE} is not in the history")
        assert MIGRATIONS_HEAD in checked or MIGRATIONS_HEAD == RULE_BASELINE

    @pytest.mark.parametrize(
        "upgrade",
        [
            'op.drop_column("users", "bio")',
            'op.drop_table("profiles")',
            'op.rename_table("users", "accounts")',
            'op.alter_column("users", "email", new_column_name="mail")',
            'op.alter_column("users", "bio", type_=sa.Integer())',
            'op.alter_column("users", "bio", nullable=False)',
            'op.add_column("users", sa.Column("age", sa.Integer(), nullable=False))',
            'op.execute(sa.text("ALTER TABLE users DROP COLUMN bio"))',
            'op.execute("DROP TABLE profiles")',
            'op.execute(sa.text("ALTER TABLE users RENAME COLUMN bio TO about"))',
            'op.execute(sa.text("ALTER TABLE users ALTER COLUMN bio SET NOT NULL"))',
            'op.execute(sa.text("ALTER TABLE users ALTER COLUMN age TYPE bigint"))',
            'op.execute(sa.text("ALTER TABLE users ADD COLUMN age integer NOT NULL"))',
        ],
    )
    def test_a_revision_that_takes_away_or_tightens_is_refused_unless_it_contracts(self, upgrade: str) -> None:
        source = f"import sqlalchemy as sa\nfrom alembic import op\n\n\ndef upgrade() -> None:\n    {upgrade}\n"
        assert rule_violations(source, ancestors={"e1", "e2"})
        assert rule_violations(f'contracts = "zz"\n{source}', ancestors={"e1", "e2"})  # not an earlier revision
        assert rule_violations(f'contracts = "e1"\n{source}', ancestors={"e1", "e2"}) == []

    @pytest.mark.parametrize(
        "upgrade",
        [
            'op.add_column("users", sa.Column("age", sa.Integer(), nullable=True))',
            'op.add_column("users", sa.Column("age", sa.Integer(), nullable=False, server_default="0"))',
            'op.create_table("notes", sa.Column("id", sa.Integer(), primary_key=True))',
            'op.create_index("ix_users_bio", "users", ["bio"])',
            'op.execute(sa.text("ALTER TABLE users ADD COLUMN age integer NOT NULL DEFAULT 0"))',
            'op.execute(sa.text("ALTER TABLE security_events ADD COLUMN request_id varchar(128)"))',
        ],
    )
    def test_a_revision_that_only_adds_is_allowed(self, upgrade: str) -> None:
        source = f"import sqlalchemy as sa\nfrom alembic import op\n\n\ndef upgrade() -> None:\n    {upgrade}\n"
        assert rule_violations(source, ancestors=set()) == []
        # what the downgrade takes away is no concern of the release before
        assert (
            rule_violations(source + '\n\ndef downgrade() -> None:\n    op.drop_table("notes")\n', ancestors=set())
            == []
        )
