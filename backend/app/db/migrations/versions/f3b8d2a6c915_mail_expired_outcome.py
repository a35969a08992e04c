"""mail: a message may be recorded `expired`

Revision ID: f3b8d2a6c915
Revises: a5d3e8b1c7f2
Create Date: 2026-11-30

A message that could not be sent before its end of life (its kind's max age, counted from when it
was asked for: a mail server that greylists, is down, or refuses our settings all that time) is
recorded with the outcome `expired` and never sent late. The outcome's check constraint, unnamed
in the revision that made the table, is replaced by a named one that allows it.

Downgrade: the older code knows no `expired`; such messages become `failed` (with a last error
that says why), which the older code also never sends again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3b8d2a6c915"
down_revision: str | None = "a5d3e8b1c7f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("ALTER TABLE outbox_messages DROP CONSTRAINT outbox_messages_outcome_check"))
    op.execute(
        sa.text(
            "ALTER TABLE outbox_messages ADD CONSTRAINT ck_outbox_messages_outcome"
            " CHECK (outcome IN ('sent', 'skipped', 'failed', 'expired'))"
        )
    )


def downgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE outbox_messages SET outcome = 'failed',"
            " last_error = left('expired unsent; ' || coalesce(last_error, ''), 500)"
            " WHERE outcome = 'expired'"
        )
    )
    op.execute(sa.text("ALTER TABLE outbox_messages DROP CONSTRAINT ck_outbox_messages_outcome"))
    op.execute(
        sa.text(
            "ALTER TABLE outbox_messages ADD CONSTRAINT outbox_messages_outcome_check"
            " CHECK (outcome IN ('sent', 'skipped', 'failed'))"
        )
    )
