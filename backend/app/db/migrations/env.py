import logging
from collections.abc import Collection, Mapping
from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic import context
from alembic.migration import MigrationContext, MigrationInfo
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import URL, make_url

alembic_config = context.config
if alembic_config.config_file_name is not None and alembic_config.attributes.get("configure_logger", True):
    fileConfig(alembic_config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")


def database_url() -> URL:
    """The URL to migrate: the caller's (tests pass one), else the app's configured database."""
    url = alembic_config.attributes.get("database_url")
    if url is None:
        from app.core.config import DATABASE_URL

        url = DATABASE_URL
    # The app talks asyncpg through `databases`; Alembic needs a synchronous driver.
    return make_url(str(url)).set(drivername="postgresql+psycopg")


# Every revision applied to the database has a row in schema_revisions (made by revision
# 1c9e5b7a3d20, which also records the ones before it): a replica of an older release reads there
# whether the database's newest revision, one it has never seen, comes after its own.
RECORD_REVISION = sa.text(
    "INSERT INTO schema_revisions (revision) VALUES (:revision) ON CONFLICT (revision) DO NOTHING"
)
FORGET_REVISION = sa.text("DELETE FROM schema_revisions WHERE revision = :revision")
HAS_HISTORY = sa.text("SELECT to_regclass('schema_revisions') IS NOT NULL")


def record_revision(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    """Called by Alembic after each step, in its transaction: record or forget the step's revision."""
    connection = ctx.connection
    if connection is None or not connection.execute(HAS_HISTORY).scalar():
        return  # before the table's revision, or its downgrade: nothing to keep
    statement = RECORD_REVISION if step.is_upgrade else FORGET_REVISION
    for revision in step.up_revision_ids:
        connection.execute(statement, {"revision": revision})


def run_migrations_offline() -> None:
    context.configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, on_version_apply=record_revision)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
