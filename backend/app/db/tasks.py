import logging

from databases import Database, DatabaseURL
from fastapi import FastAPI

logger = logging.getLogger(__name__)


async def connect_to_db(app: FastAPI, database_url: DatabaseURL) -> None:
    database = Database(str(database_url), min_size=2, max_size=10)
    # A failure propagates: a server that cannot reach its database must not pretend to be up.
    await database.connect()
    app.state._db = database


async def close_db_connection(app: FastAPI) -> None:
    database: Database = app.state._db
    await database.disconnect()
