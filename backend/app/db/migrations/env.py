import logging
from logging.config import fileConfig

from alembic import context
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


def run_migrations_offline() -> None:
    context.configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
