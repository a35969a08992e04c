import json
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from app.api.conditional import CONDITIONAL_RESPONSES, if_none_match, tagged_response
from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.cleanings import (
    NOT_FOUND,
    NOT_OWNER,
    CleaningsRepo,
    ModifiableCleaning,
    cleaning_not_found,
)
from app.api.dependencies.database import database_of
from app.api.dependencies.search import (
    SEARCH_ONLY_EXCLUDES,
    SEARCH_WITHOUT_WORDS,
    SearchQuery,
    bad_search,
)
from app.api.errors import error_responses
from app.db.errors import (
    CleaningHasAcceptedOfferError,
    InvalidCleaningTypeError,
    SearchQueryOnlyExcludesError,
    SearchQueryWithoutWordsError,
)
from app.db.repositories.base import MAX_ID
from app.db.repositories.cleanings import CleaningsRepository
from app.db.repositories.search import SearchRepository
from app.models.cleaning import CleaningCreate, CleaningPublic, CleaningUpdate
from app.models.search import CleaningSearchPage

router = APIRouter()

INVALID_CLEANING_TYPE = "Invalid cleaning type. Cannot be None."
HAS_ACCEPTED_OFFER = "This cleaning job has an accepted offer and cannot be deleted."


@router.get(
    "/",
    response_model=list[CleaningPublic],
    name="cleanings:list-all-user-cleanings",
    summary="List my cleanings",
    responses={**error_responses(401, 503), **CONDITIONAL_RESPONSES},
)
async def list_all_user_cleanings(
    current_user: CurrentUser,
    cleanings_repo: CleaningsRepo,
    request: Request,
    limit: Annotated[int | None, Query(ge=1, le=100, description="At most this many cleanings (default: all).")] = None,
    after_id: Annotated[
        int, Query(ge=0, le=MAX_ID, description="The `id` of the last cleaning of the page before.")
    ] = 0,
) -> Response:
    """The caller's cleanings, in the order they were posted; page with `limit` and `after_id`.
    With an `ETag`: send it back in `If-None-Match` for a 304 while the page is the same."""
    page = await cleanings_repo.list_tagged_user_cleanings(
        requesting_user=current_user, limit=limit, after_id=after_id, if_none_match=if_none_match(request)
    )
    return tagged_response(page)


@router.post(
    "/",
    response_model=CleaningPublic,
    name="cleanings:create-cleaning",
    summary="Post a cleaning",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 413, 503),
)
async def create_new_cleaning(
    new_cleaning: Annotated[CleaningCreate, Body(embed=True)],
    current_user: CurrentUser,
    cleanings_repo: CleaningsRepo,
) -> CleaningPublic:
    created = await cleanings_repo.create_cleaning(new_cleaning=new_cleaning, requesting_user=current_user)
    return CleaningPublic.model_validate(created.model_dump())


# Before "/{cleaning_id}/", which would take "search" for an id (and answer 422).
@router.get(
    "/search/",
    response_model=CleaningSearchPage,
    name="cleanings:search-cleanings",
    summary="Search for jobs",
    responses=error_responses(400, 401, 503, e400=SEARCH_WITHOUT_WORDS),
)
async def search_cleanings(current_user: CurrentUser, search: SearchQuery, request: Request) -> Response:
    """Any logged-in user may search every user's jobs; each comes with its owner, as in the feed.
    Page with `next_cursor`: pages neither skip nor repeat a job, even while jobs are posted.
    Sorted by relevance, the newest SEARCH_RELEVANCE_WINDOW (1000) matches are ranked: sort by
    `newest` to reach older ones."""
    try:
        page = await SearchRepository(database_of(request)).search_cleanings(
            filters=search.filters, sort=search.sort, limit=search.limit, cursor=search.cursor
        )
    except SearchQueryWithoutWordsError as exc:
        raise bad_search(SEARCH_WITHOUT_WORDS) from exc
    except SearchQueryOnlyExcludesError as exc:
        raise bad_search(SEARCH_ONLY_EXCLUDES) from exc
    # The items' JSON is PostgreSQL's (app/db/json_rows.py); the cursor's is a quoted base64url string.
    next_cursor = json.dumps(page.next_cursor.encode() if page.next_cursor else None)
    return Response(
        content=f'{{"cleanings":{page.items_json},"next_cursor":{next_cursor}}}', media_type="application/json"
    )


@router.api_route("/search/", methods=["PUT", "DELETE"], include_in_schema=False)
async def search_is_read_only() -> JSONResponse:
    """Without this, PUT and DELETE .../search/ would reach the routes below with "search" as a
    cleaning id and answer 422; a search can only be read."""
    return JSONResponse(
        status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
        content={"detail": "Method Not Allowed"},
        headers={"Allow": "GET"},
    )


@router.get(
    "/{cleaning_id}/",
    response_model=CleaningPublic,
    name="cleanings:get-cleaning-by-id",
    summary="Get a cleaning",
    responses={**error_responses(401, 404, 503, e404=NOT_FOUND), **CONDITIONAL_RESPONSES},
)
async def get_cleaning_by_id(
    # As CleaningFromPath takes it: a positive integer (422), checked after the caller (401).
    cleaning_id: Annotated[int, Path(ge=1)],
    current_user: CurrentUser,
    request: Request,
) -> Response:
    """Any logged-in user may read any cleaning (that is how cleaners find work); the owner comes
    embedded, with their profile. With an `ETag`: send it back in `If-None-Match` for a 304 while
    the cleaning, its owner and the owner's profile are the same."""
    # The repository is made here, as CleaningFromPath makes it: one dependency fewer to solve.
    cleaning = await CleaningsRepository(database_of(request)).get_tagged_cleaning_by_id(
        id=cleaning_id, reader=current_user, if_none_match=if_none_match(request)
    )
    if cleaning is None:
        raise cleaning_not_found()
    return tagged_response(cleaning)


@router.put(
    "/{cleaning_id}/",
    response_model=CleaningPublic,
    name="cleanings:update-cleaning-by-id",
    summary="Update a cleaning",
    responses=error_responses(400, 401, 403, 404, 413, 503, e400=INVALID_CLEANING_TYPE, e403=NOT_OWNER),
)
async def update_cleaning_by_id(
    cleaning: ModifiableCleaning,
    cleaning_update: Annotated[CleaningUpdate, Body(embed=True)],
    cleanings_repo: CleaningsRepo,
) -> CleaningPublic:
    try:
        updated = await cleanings_repo.update_cleaning(cleaning=cleaning, cleaning_update=cleaning_update)
    except InvalidCleaningTypeError as exc:
        raise HTTPException(
            status_code=status.HTTP_400_BAD_REQUEST,
            detail=INVALID_CLEANING_TYPE,
        ) from exc
    if updated is None:  # deleted since it was looked up
        raise cleaning_not_found()
    return CleaningPublic.model_validate(updated.model_dump())


@router.delete(
    "/{cleaning_id}/",
    response_model=int,
    name="cleanings:delete-cleaning-by-id",
    summary="Delete a cleaning",
    responses=error_responses(400, 401, 403, 404, 503, e400=HAS_ACCEPTED_OFFER, e403=NOT_OWNER),
)
async def delete_cleaning_by_id(cleaning: ModifiableCleaning, cleanings_repo: CleaningsRepo) -> int:
    """Delete the cleaning, and the offers made for it; not once an offer was accepted (the
    work is agreed, or done and evaluated: the cleaner can cancel an accepted offer first)."""
    try:
        deleted_id = await cleanings_repo.delete_cleaning_by_id(cleaning=cleaning)
    except CleaningHasAcceptedOfferError as exc:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=HAS_ACCEPTED_OFFER) from exc
    if deleted_id is None:  # deleted since it was looked up
        raise cleaning_not_found()
    return deleted_id
