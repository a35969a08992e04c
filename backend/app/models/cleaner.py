"""Finding cleaners (issue 24): cleaners with their evaluation statistics, a page at a time."""

import base64
import binascii
import json
import math
from enum import StrEnum
from typing import Annotated, NamedTuple

from pydantic import Field

from app.models.core import CoreModel
from app.models.evaluation import EvaluationAggregate
from app.models.user import UserPublic

# The rating's prior: every cleaner starts from PRIOR_WEIGHT evaluations of PRIOR_MEAN stars. The
# database computes the rating (revision 4c8e1a6d9f27, whose constants these must equal).
PRIOR_MEAN = 3
PRIOR_WEIGHT = 5

MAX_INT = 2**31 - 1  # counts and ids are PostgreSQL integers


def bayesian_rating(*, overall_rating_sum: int, total_evaluations: int) -> float:
    """The rating the list sorts by: the mean of a cleaner's overall ratings with the prior's
    evaluations among them (what the database computes, to the last bit)."""
    return (PRIOR_WEIGHT * PRIOR_MEAN + overall_rating_sum) / (PRIOR_WEIGHT + total_evaluations)


class CleanerSort(StrEnum):
    rating = "rating"
    completed_jobs = "completed_jobs"


class CleanerPublic(CoreModel):
    """A cleaner: the user (with their profile), the rating the list sorts by, and the figures of
    GET /api/users/{username}/evaluations/stats/ (`stats.total_evaluations` is the number of
    completed jobs: a job is completed when its owner evaluates it)."""

    cleaner: UserPublic
    rating: Annotated[float, Field(ge=0, le=5)]
    stats: EvaluationAggregate


class CleanersPage(CoreModel):
    """A page of cleaners, and the cursor of the next page (null on the last)."""

    cleaners: list[CleanerPublic]
    next_cursor: str | None = None


class CleanerCursor(NamedTuple):
    """Where a page ends: its sort, the last cleaner's sort key (the rating, or the number of
    completed jobs) and their id. The next page is what comes strictly after it."""

    sort: CleanerSort
    key: float | int
    id: int

    def encode(self) -> str:
        """Opaque to clients: URL-safe base64 of [sort, key, id] (a float written as Python's
        repr, which reads back as the same float: the cursor is exact)."""
        text = json.dumps([self.sort.value, self.key, self.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> "CleanerCursor":
        """The cursor `encode` wrote; ValueError for anything else."""
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            sort, key, id_ = json.loads(text)
            sort = CleanerSort(sort)
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise ValueError("not a cursor of this list") from exc
        if type(id_) is not int or not 1 <= id_ <= MAX_INT:
            raise ValueError("not a cursor of this list")
        if sort is CleanerSort.rating:
            valid = type(key) is float and math.isfinite(key) and 0 <= key <= 5
        else:
            valid = type(key) is int and 1 <= key <= MAX_INT
        if not valid:
            raise ValueError("not a cursor of this list")
        return cls(sort=sort, key=key, id=id_)
