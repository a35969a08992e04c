from typing import Annotated

from fastapi import Query

from app.db.repositories.base import MAX_ID

Limit = Annotated[int, Query(ge=1, le=100, description="How many items per page, at most 100.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="How many items to skip.")]
