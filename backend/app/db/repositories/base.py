from collections.abc import Mapping
from typing import Any

from databases import Database
from databases.interfaces import Record

from app.core import config

# Ids are PostgreSQL `integer`s: a larger number can name no row (and would make the driver raise).
MAX_ID = 2**31 - 1


def alive_ended_count(cte: str) -> str:
    """SQL: how many of the sessions the statement `cte` ended (returning their `expires_at` and
    `last_used_at`) were alive. One that had expired or gone idle had ended already: counting it
    again in phresh_sessions_ended_total would count a session twice."""
    idle = f"make_interval(mins => {int(config.SESSION_IDLE_TIMEOUT_MINUTES)})"
    return f"(SELECT count(*) FROM {cte} WHERE expires_at > now() AND last_used_at > now() - {idle})"


class BaseRepository:
    def __init__(self, db: Database) -> None:
        self.db = db


def as_dict(record: Record) -> Mapping[str, Any]:
    """A row as a mapping of column name to value, ready for `Model.model_validate`."""
    return dict(record._mapping)
