from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.client import ClientAddress
from app.api.dependencies.database import get_repository
from app.db.repositories.security_events import SecurityEventsRepository
from app.models.security_event import SecurityEventKind


@dataclass(frozen=True, slots=True)
class AuditTrail:
    """The audit trail, for what the current user does from their address in this request."""

    events: SecurityEventsRepository
    user_id: int
    client_address: str

    async def record(self, kind: SecurityEventKind, *, detail: str) -> None:
        await self.events.record(kind=kind, user_id=self.user_id, client_address=self.client_address, detail=detail)


async def get_audit_trail(
    current_user: CurrentUser,
    client_address: ClientAddress,
    events: Annotated[SecurityEventsRepository, Depends(get_repository(SecurityEventsRepository))],
) -> AuditTrail:
    return AuditTrail(events=events, user_id=current_user.id, client_address=client_address)


Audit = Annotated[AuditTrail, Depends(get_audit_trail)]
