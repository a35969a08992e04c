"""The activity feed (Part 21): what happened to cleanings, newest first."""

from datetime import datetime
from typing import Literal

from app.models.cleaning import CleaningPublic
from app.models.core import CoreModel
from app.models.user import UserPublic


class FeedItem(CoreModel):
    row_number: int | None = None
    event_timestamp: datetime | None = None


class CleaningFeedItem(CleaningPublic, FeedItem):
    """A cleaning as it is now, its owner embedded, and one event of it: its creation
    (`is_create`, at `created_at`) or its latest update (`is_update`, at `updated_at`)."""

    # Always embedded in the feed (None only for a cleaning made before cleanings had owners):
    # not a union with the owner's id, which pydantic serializes at twice the cost.
    owner: UserPublic | None = None
    event_type: Literal["is_update", "is_create"] | None = None
