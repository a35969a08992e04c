"""cleanings get an owner; users get a token version that revokes their tokens

Revision ID: 7c41e0d2a9b5
Revises: 2a6f3c1b9d04
Create Date: 2026-11-28

Cleanings created before this revision had no owner and keep none (owner stays NULL): nobody's
list shows them, any logged-in user can still read them by id, and only superusers can change or
delete them. Guessing an owner for them would hand somebody else's request to a stranger.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c41e0d2a9b5"
down_revision: str | None = "2a6f3c1b9d04"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "cleanings",
        sa.Column("owner", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    )
    # The list route reads a user's cleanings by owner.
    op.create_index("ix_cleanings_owner", "cleanings", ["owner"])
    # Bumped on every password change: tokens carry the version they were minted under, and a
    # token from an older version is refused.
    op.add_column("users", sa.Column("token_version", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("users", "token_version")
    op.drop_index("ix_cleanings_owner", table_name="cleanings")
    op.drop_column("cleanings", "owner")
