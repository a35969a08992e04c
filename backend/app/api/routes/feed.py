from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from app.api.dependencies.auth import get_current_active_user
from app.api.dependencies.database import get_repository
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
    dependencies=[Depends(get_current_active_user)],
    responses=error_responses(401, 503),
)
async def get_cleaning_feed_for_user(
    feed_repo: Annotated[FeedRepository, Depends(get_repository(FeedRepository))],
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
    and `event_timestamp`. For the next page, pass the last item's `event_timestamp` and `id`."""
    # Computed for each request (the tutorial froze it when the module was imported).
    cursor = datetime.now(UTC) + DEFAULT_LEAD if starting_date is None else in_utc(starting_date)
    page = await feed_repo.fetch_cleaning_jobs_feed_json(
        starting_date=cursor, page_chunk_size=page_chunk_size, starting_id=starting_id
    )
    return Response(content=page, media_type="application/json")
