from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.dependencies.auth import CurrentSuperuser
from app.api.dependencies.database import get_repository
from app.api.dependencies.paging import Limit, Offset
from app.api.errors import error_responses
from app.db.repositories.security_events import SecurityEventsRepository
from app.models.security_event import SecurityEventKind, SecurityEventPublic, SecurityEventsPage

router = APIRouter()


@router.get(
    "/",
    response_model=SecurityEventsPage,
    name="security-events:list-security-events",
    summary="List security events",
    responses=error_responses(401, 403, 503),
)
async def list_security_events(
    superuser: CurrentSuperuser,
    events_repo: Annotated[SecurityEventsRepository, Depends(get_repository(SecurityEventsRepository))],
    limit: Limit = 50,
    offset: Offset = 0,
    kind: SecurityEventKind | None = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    request_id: Annotated[
        str | None, Query(max_length=128, description="Only the events of the request with this X-Request-ID.")
    ] = None,
) -> SecurityEventsPage:
    """The audit trail, newest first (superusers only): registrations, logins, lockouts, password
    changes, deactivations. It records who, when, from which address and in which request (the
    `X-Request-ID` of its answer, which leads to the request's log lines); never a secret."""
    events, total = await events_repo.list_events(
        limit=limit, offset=offset, kind=kind, user_id=user_id, request_id=request_id
    )
    return SecurityEventsPage(
        events=[SecurityEventPublic.model_validate(event.model_dump()) for event in events],
        total=total,
        limit=limit,
        offset=offset,
    )
