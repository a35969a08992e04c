"""What a search for jobs asks for (GET /api/cleanings/search/), read from its query and checked:
the filters, the sort, the page size and where the page starts."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, HTTPException, Query, status

from app.models.cleaning import MAX_PRICE, CleaningType
from app.models.search import (
    CURSOR_PATTERN,
    MAX_CURSOR_LENGTH,
    MAX_PAGE_SIZE,
    MAX_QUERY_LENGTH,
    QUERY_PATTERN,
    SearchCursor,
    SearchFilters,
    SearchInclude,
    SearchSort,
)

SEARCH_WITHOUT_WORDS = "The search has no word to look for (only common words such as 'the', or punctuation)."
SEARCH_ONLY_EXCLUDES = "The search only excludes words: add a word to look for."
RELEVANCE_WITHOUT_QUERY = "Sorting by relevance needs words to search for (q): sort by newest or price instead."
REVERSED_PRICE_RANGE = "min_price is more than max_price."
INVALID_CURSOR = "This cursor is not one of ours: pass the next_cursor of a page as it came."
FOREIGN_CURSOR = "This cursor belongs to another search or sort: start again without it, or search as before."


def bad_search(detail: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=detail)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    filters: SearchFilters
    sort: SearchSort
    limit: int
    cursor: SearchCursor | None


def _price(value: float | None) -> Decimal | None:
    # The shortest decimal that reads back as the float (29.99, not 29.989999...).
    return Decimal(repr(value)) if value is not None else None


async def search_request(
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_QUERY_LENGTH,
            pattern=QUERY_PATTERN,
            description="Words to look for in the name and description, as a search engine reads them: "
            '`oven windows` (both), `oven or windows`, `"deep clean"` (the phrase), `oven -windows` (not windows). '
            "Words are stemmed (`cleaning` finds `clean`); common words (`the`) are ignored.",
        ),
    ] = None,
    cleaning_type: Annotated[
        list[CleaningType] | None,
        Query(max_length=len(CleaningType), description="Only these types (repeat the parameter for more)."),
    ] = None,
    min_price: Annotated[float | None, Query(ge=0, le=MAX_PRICE, description="Only jobs priced at least this.")] = None,
    max_price: Annotated[float | None, Query(ge=0, le=MAX_PRICE, description="Only jobs priced at most this.")] = None,
    include: Annotated[
        SearchInclude,
        Query(description="`open`: only jobs without an accepted (or completed) offer; `all`: every job."),
    ] = SearchInclude.open,
    sort: Annotated[
        SearchSort | None,
        Query(
            description="`relevance` (the default with `q`; needs it), `newest` (the default without), "
            "`price_asc` or `price_desc`."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR_LENGTH,
            pattern=CURSOR_PATTERN,
            description="The `next_cursor` of the page before, with the same search and sort.",
        ),
    ] = None,
) -> SearchRequest:
    """The search the query asks for; 400 for one that reads well but cannot be answered."""
    chosen = sort or (SearchSort.relevance if q is not None else SearchSort.newest)
    if chosen is SearchSort.relevance and q is None:
        raise bad_search(RELEVANCE_WITHOUT_QUERY)
    low, high = _price(min_price), _price(max_price)
    if low is not None and high is not None and low > high:
        raise bad_search(REVERSED_PRICE_RANGE)
    filters = SearchFilters(
        q=q,
        cleaning_types=tuple(cleaning_type) if cleaning_type else None,
        min_price=low,
        max_price=high,
        include=include,
    )
    after = None
    if cursor is not None:
        try:
            after = SearchCursor.decode(cursor)
        except ValueError as exc:
            raise bad_search(INVALID_CURSOR) from exc
        if after.sort is not chosen or after.search != filters.fingerprint(chosen):
            raise bad_search(FOREIGN_CURSOR)
    return SearchRequest(filters=filters, sort=chosen, limit=limit, cursor=after)


SearchQuery = Annotated[SearchRequest, Depends(search_request)]
