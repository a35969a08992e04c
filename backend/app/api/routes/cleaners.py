"""Finding cleaners (issue 24): GET /api/profiles/, the tutorial frontend's "Find Cleaners"."""

from typing import Annotated, NamedTuple

from fastapi import APIRouter, Depends, HTTPException, Query, status

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.database import get_repository
from app.api.errors import error_responses
from app.db.repositories.cleaners import CleanersRepository
from app.models.cleaner import PRIOR_MEAN, PRIOR_WEIGHT, CleanerCursor, CleanerSort, CleanersPage

router = APIRouter()

CleanersRepo = Annotated[CleanersRepository, Depends(get_repository(CleanersRepository))]

INVALID_CURSOR = "That cursor is not one this list gave: start again without one."
CURSOR_OF_ANOTHER_SORT = "That cursor belongs to another sort order: start again without one."

# Longer than any cursor the list writes (about 60 characters).
MAX_CURSOR_LENGTH = 200


class PageWanted(NamedTuple):
    sort: CleanerSort
    after: CleanerCursor | None


def page_wanted(
    sort: Annotated[
        CleanerSort,
        Query(
            description=f"`rating` (the default): a Bayesian average, the cleaner's overall ratings with "
            f"{PRIOR_WEIGHT} of {PRIOR_MEAN} stars among them, highest first. `completed_jobs`: the most "
            "evaluated jobs first. Ties: the newest user first."
        ),
    ] = CleanerSort.rating,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR_LENGTH,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="The `next_cursor` of the page before, with the same `sort`. Leave out for the first page.",
        ),
    ] = None,
) -> PageWanted:
    """The sort and the cursor the page continues from (None for the first page); 400 for a cursor
    the list did not write, or wrote for another sort."""
    if cursor is None:
        return PageWanted(sort=sort, after=None)
    try:
        decoded = CleanerCursor.decode(cursor)
    except ValueError as exc:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=INVALID_CURSOR) from exc
    if decoded.sort is not sort:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=CURSOR_OF_ANOTHER_SORT)
    return PageWanted(sort=sort, after=decoded)


@router.get(
    "/",
    response_model=CleanersPage,
    name="profiles:list-cleaners",
    summary="Find cleaners",
    responses=error_responses(400, 401, 503, e400=INVALID_CURSOR),
)
async def list_cleaners(
    current_user: CurrentUser,
    wanted: Annotated[PageWanted, Depends(page_wanted)],
    cleaners_repo: CleanersRepo,
    limit: Annotated[int, Query(ge=1, le=50, description="How many cleaners per page, at most 50.")] = 20,
) -> CleanersPage:
    """Every user with at least one completed job (an evaluated offer), with their profile, their
    rating and the figures of their stats (GET /api/users/{username}/evaluations/stats/), a page at a
    time. For the next page, pass `next_cursor` as `cursor` with the same `sort`."""
    cleaners, next_cursor = await cleaners_repo.list_cleaners(sort=wanted.sort, limit=limit, after=wanted.after)
    return CleanersPage(cleaners=cleaners, next_cursor=next_cursor.encode() if next_cursor else None)
