from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.api.conditional import CONDITIONAL_RESPONSES, if_none_match, tagged_response
from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.database import database_of
from app.api.dependencies.paging import DateTimeQuery, in_utc
from app.api.errors import error_responses
from app.db.repositories.base import MAX_ID
from app.db.repositories.feed import FeedRepository
from app.models.feed import CleaningFeedItem

router = APIRouter()

# The tutorial's default cursor: ten minutes ahead, so that the first page has the newest events
# even from a server whose clock runs a little behind the database's.
DEFAULT_LEAD = timedelta(minutes=10)


@router.get(
    "/cleanings/",
    response_model=list[CleaningFeedItem],
    name="feed:get-cleaning-feed-for-user",
    summary="Get the feed",
    responses={**error_responses(401, 503), **CONDITIONAL_RESPONSES},
)
async def get_cleaning_feed_for_user(
    current_user: CurrentUser,
    request: Request,
    page_chunk_size: Annotated[int, Query(ge=1, le=50)] = 20,
    starting_date: Annotated[
        DateTimeQuery | None,
        Query(description="Events before this time. A time without a time zone is read as UTC. Default: now + 10 min."),
    ] = None,
    starting_id: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_ID,
            description="With `starting_date` set to the last item's `event_timestamp`, that item's `id`: the next "
            "page starts right after it, even among events that share its timestamp. 0 (the default): every event "
            "strictly before `starting_date`, as in the tutorial.",
        ),
    ] = 0,
) -> Response:
    """Every user's cleanings as they are created and updated, newest first, a page at a time; each
    item is the cleaning as it is now, with its owner, `event_type` (`is_create` or `is_update`)
    and `event_timestamp`. For the next page, pass the last item's `event_timestamp` and `id`.
    With an `ETag`: poll with it in `If-None-Match`, and get a 304 while the page is the same."""
    # Computed for each request (the tutorial froze it when the module was imported).
    cursor = datetime.now(UTC) + DEFAULT_LEAD if starting_date is None else in_utc(starting_date)
    # The repository is made here rather than by a dependency: one dependency fewer to solve.
    page = await FeedRepository(database_of(request)).fetch_tagged_cleaning_jobs_feed(
        starting_date=cursor,
        page_chunk_size=page_chunk_size,
        starting_id=starting_id,
        reader=current_user,
        default_cursor=starting_date is None,
        if_none_match=if_none_match(request),
    )
    return tagged_response(page)
