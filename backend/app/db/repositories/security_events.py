"""The audit trail: who did what security-relevant thing, when, from where. Never secrets."""

from app.core.logging import current_request_id
from app.db.repositories.base import BaseRepository, as_dict
from app.models.security_event import SecurityEventInDB, SecurityEventKind

SECURITY_EVENT_COLUMNS = "id, created_at, kind, user_id, client_address, detail, request_id"

RECORD_EVENT_QUERY = """
    INSERT INTO security_events (kind, user_id, client_address, detail, request_id)
    VALUES (:kind, :user_id, :client_address, :detail, :request_id);
"""

# Optional filters: a NULL parameter matches every row.
LIST_EVENTS_QUERY = f"""
    SELECT {SECURITY_EVENT_COLUMNS}
    FROM security_events
    WHERE (CAST(:kind AS text) IS NULL OR kind = :kind)
      AND (CAST(:user_id AS integer) IS NULL OR user_id = :user_id)
      AND (CAST(:request_id AS text) IS NULL OR request_id = :request_id)
    ORDER BY id DESC
    LIMIT :limit OFFSET :offset;
"""

COUNT_EVENTS_QUERY = """
    SELECT count(*)
    FROM security_events
    WHERE (CAST(:kind AS text) IS NULL OR kind = :kind)
      AND (CAST(:user_id AS integer) IS NULL OR user_id = :user_id)
      AND (CAST(:request_id AS text) IS NULL OR request_id = :request_id);
"""


class SecurityEventsRepository(BaseRepository):
    async def record(
        self,
        *,
        kind: SecurityEventKind,
        user_id: int | None = None,
        client_address: str | None = None,
        detail: str | None = None,
    ) -> None:
        values = {
            "kind": kind.value,
            "user_id": user_id,
            "client_address": client_address,
            "detail": detail,
            # The request that records it (None outside one): the event leads to its log lines.
            "request_id": current_request_id(),
        }
        await self.db.execute(RECORD_EVENT_QUERY, values)

    async def list_events(
        self,
        *,
        limit: int,
        offset: int,
        kind: SecurityEventKind | None = None,
        user_id: int | None = None,
        request_id: str | None = None,
    ) -> tuple[list[SecurityEventInDB], int]:
        """One page of events, newest first, and how many match in all."""
        filters = {"kind": kind.value if kind else None, "user_id": user_id, "request_id": request_id}
        async with self.db.transaction(isolation="repeatable_read"):  # one snapshot for page and count
            records = await self.db.fetch_all(LIST_EVENTS_QUERY, {**filters, "limit": limit, "offset": offset})
            total = await self.db.fetch_val(COUNT_EVENTS_QUERY, filters)
        return [SecurityEventInDB.model_validate(as_dict(record)) for record in records], int(total)
