import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query
from pydantic import BeforeValidator

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


# A date and a time of day (RFC 3339, or with a space for the "T" as Python's str() writes it):
# pydantic alone would also read "0.5" or "1700000000" as seconds since 1970, which the OpenAPI
# document's `format: date-time` does not allow.
_DATE_AND_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _date_and_time_text(value: object) -> object:
    if isinstance(value, str) and not _DATE_AND_TIME.match(value):
        raise ValueError("must be a date and time, such as 2026-11-29T10:00:00Z")
    return value


DateTimeQuery = Annotated[datetime, BeforeValidator(_date_and_time_text)]
