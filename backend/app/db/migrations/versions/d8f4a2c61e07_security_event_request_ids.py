"""security_events: the request id of the request that recorded each event

Revision ID: d8f4a2c61e07
Revises: f3b8d2a6c915
Create Date: 2026-12-05

Each audit event records the id of the request that caused it (the X-Request-ID its answer
carried), so that an event leads to every log line of that request and back. Events recorded
outside a request (the revision that renamed duplicate users) have none: the column is nullable.
A text of at most 128 characters, as the ids Phresh accepts from a client. Nothing looks events up
by it often enough for an index: a search by id is an investigation, not a hot path.

Downgrade: drops the column (and with it the ids already recorded).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d8f4a2c61e07"
down_revision: str | None = "f3b8d2a6c915"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("ALTER TABLE security_events ADD COLUMN request_id varchar(128)"))


def downgrade() -> None:
    op.execute(sa.text("ALTER TABLE security_events DROP COLUMN request_id"))
