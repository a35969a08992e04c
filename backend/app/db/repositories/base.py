from collections.abc import Mapping
from typing import Any

from databases import Database
from databases.interfaces import Record

# Ids are PostgreSQL `integer`s: a larger number can name no row (and would make the driver raise).
MAX_ID = 2**31 - 1


class BaseRepository:
    def __init__(self, db: Database) -> None:
        self.db = db


def as_dict(record: Record) -> Mapping[str, Any]:
    """A row as a mapping of column name to value, ready for `Model.model_validate`."""
    return dict(record._mapping)
