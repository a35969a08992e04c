"""schema_revisions: every revision applied to this database, for readiness across releases

Revision ID: 1c9e5b7a3d20
Revises: d8f4a2c61e07
Create Date: 2026-12-05

`alembic_version` holds only the newest revision. A replica of the release before the newest
cannot tell from that name, which it has never seen, whether the database moved on along its own
history (a later release migrated it: serve on) or is someone else's (do not). Here every applied
revision has a row: migrations/env.py adds one for each revision applied and removes it when the
revision is undone, so a replica is ready while its own newest revision is among them
(app/api/routes/health.py, docs/deployment.md). The revisions before this one are recorded here,
as the history they are.

Downgrade: drops the table (the code before this revision does not read it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1c9e5b7a3d20"
down_revision: str | None = "d8f4a2c61e07"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The history up to this revision, oldest first.
EARLIER_REVISIONS = (
    "2a6f3c1b9d04",
    "7c41e0d2a9b5",
    "b3d9f15e6a72",
    "5e8a41c7d2f3",
    "9d2c7b5e1a48",
    "c4e1f0a93b27",
    "e7a2c94d1f36",
    "a5d3e8b1c7f2",
    "f3b8d2a6c915",
    "d8f4a2c61e07",
)


def upgrade() -> None:
    op.execute(
        sa.text(
            "CREATE TABLE schema_revisions ("
            " revision varchar(32) PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    )
    for earlier in (*EARLIER_REVISIONS, revision):
        op.execute(sa.text("INSERT INTO schema_revisions (revision) VALUES (:revision)").bindparams(revision=earlier))


def downgrade() -> None:
    op.execute(sa.text("DROP TABLE schema_revisions"))
