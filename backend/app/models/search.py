"""Searching for jobs (issue 24): GET /api/cleanings/search/, its answer and its cursor."""

import base64
import binascii
import hashlib
import json
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationError

from app.models.cleaning import CleaningPublic, CleaningType
from app.models.core import CoreModel
from app.models.user import UserPublic

# A query is a few words, not a document: long enough for any search a person types.
MAX_QUERY_LENGTH = 200
# Printable text with at least one character that is not a blank: no control characters (NUL
# cannot even reach PostgreSQL), nothing empty.
QUERY_PATTERN = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
MAX_CURSOR_LENGTH = 512
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
MAX_PAGE_SIZE = 50


class SearchSort(StrEnum):
    relevance = "relevance"  # best match first (needs q)
    newest = "newest"  # most recently posted first
    price_asc = "price_asc"  # cheapest first
    price_desc = "price_desc"  # dearest first


class SearchInclude(StrEnum):
    open = "open"  # jobs without an accepted (or completed) offer
    all = "all"  # every job


class SearchFilters(CoreModel):
    """What a search looks for, but its order and position: a cursor belongs to exactly these."""

    q: str | None = None
    cleaning_types: tuple[CleaningType, ...] | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    include: SearchInclude = SearchInclude.open

    def fingerprint(self, sort: SearchSort) -> str:
        """A short digest of the search and its sort, which its cursors carry."""
        types = sorted({str(kind) for kind in self.cleaning_types}) if self.cleaning_types else None
        prices = [str(price) if price is not None else None for price in (self.min_price, self.max_price)]
        canonical = json.dumps([str(sort), self.q, types, *prices, str(self.include)], separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class CleaningSearchItem(CleaningPublic):
    """A cleaning found, with its owner embedded (and the owner's profile), as the feed shows it."""

    owner: UserPublic | None = None


class CleaningSearchPage(CoreModel):
    cleanings: list[CleaningSearchItem]
    next_cursor: str | None = Field(
        default=None,
        description="Pass it as `cursor`, with the same search, for the next page; null on the last page.",
    )


# numeric(10, 2) as PostgreSQL writes it.
PriceText = Annotated[str, Field(pattern=r"^-?[0-9]{1,8}\.[0-9]{2}$")]
Id = Annotated[int, Field(ge=1, le=2_147_483_647)]


class SearchCursor(CoreModel):
    """Where a page ended: the last item's sort key and id, and what search it belongs to.

    For relevance, also the window of matches the first page ranked: its newest member (`top_...`)
    and, when it held a full window, its oldest (`window_...`), so that later pages rank the same jobs.
    Written as base64url JSON: opaque to clients, read back strictly (anything else is refused).
    """

    v: Literal[1] = 1
    sort: SearchSort
    search: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    id: Id
    created_at: datetime | None = None
    price: PriceText | None = None
    rank: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] | None = None
    window_created_at: datetime | None = None
    window_id: Id | None = None
    top_created_at: datetime | None = None
    top_id: Id | None = None

    model_config = ConfigDict(extra="forbid")

    def encode(self) -> str:
        text = self.model_dump_json(exclude_none=True)
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> "SearchCursor":
        """The cursor a client sent back; ValueError when it is not one of ours."""
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            found = cls.model_validate_json(text)
        except (binascii.Error, ValueError, ValidationError) as exc:
            raise ValueError("not a search cursor") from exc
        needed = {
            SearchSort.relevance: (found.rank, found.top_created_at, found.top_id),
            SearchSort.newest: (found.created_at,),
            SearchSort.price_asc: (found.price,),
            SearchSort.price_desc: (found.price,),
        }[found.sort]
        if any(value is None for value in needed) or (found.window_created_at is None) != (found.window_id is None):
            raise ValueError("not a search cursor")
        for moment in (found.created_at, found.window_created_at, found.top_created_at):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("not a search cursor")
        return found
