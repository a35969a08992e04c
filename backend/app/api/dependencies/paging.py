from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from app.db.repositories.base import MAX_ID

Limit = Annotated[int, Query(ge=1, le=100, description="How many items per page, at most 100.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="How many items to skip.")]


def in_utc(moment: datetime) -> datetime:
    """The moment in UTC; a time without a time zone is taken to be UTC already. A moment whose UTC
    time falls outside the years 1 to 9999 (0001-01-01T00:00+01:00) is the first or last there is."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)
