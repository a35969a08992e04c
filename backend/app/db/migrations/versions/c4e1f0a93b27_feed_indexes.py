"""the activity feed (Part 21) and growing lists read through indexes, whatever the table's size

Revision ID: c4e1f0a93b27
Revises: 9d2c7b5e1a48
Create Date: 2026-11-29

A feed page is the newest events before a cursor (a timestamp and a cleaning id): creations in
(created_at, id) order, updates in (updated_at, id) order among the cleanings updated since they
were created. Each index below serves one of them as a range scan that stops after a page, so a
page costs the same with a thousand cleanings or a million. The offers of a cleaning are paged in
(created_at, user_id) order.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4e1f0a93b27"
down_revision: str | None = "9d2c7b5e1a48"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("CREATE INDEX ix_cleanings_created_at_id ON cleanings (created_at DESC, id DESC)"))
    op.execute(
        sa.text(
            "CREATE INDEX ix_cleanings_updated_at_id ON cleanings (updated_at DESC, id DESC)"
            " WHERE updated_at <> created_at"
        )
    )
    # A user's cleanings, paged by id.
    op.execute(sa.text("CREATE INDEX ix_cleanings_owner_id ON cleanings (owner, id)"))
    op.drop_index("ix_cleanings_owner", table_name="cleanings")
    # A cleaning's offers, oldest first.
    op.execute(
        sa.text(
            "CREATE INDEX ix_user_offers_for_cleanings_cleaning_id_created_at"
            " ON user_offers_for_cleanings (cleaning_id, created_at, user_id)"
        )
    )
    op.drop_index("ix_user_offers_for_cleanings_cleaning_id", table_name="user_offers_for_cleanings")


def downgrade() -> None:
    op.create_index("ix_user_offers_for_cleanings_cleaning_id", "user_offers_for_cleanings", ["cleaning_id"])
    op.drop_index("ix_user_offers_for_cleanings_cleaning_id_created_at", table_name="user_offers_for_cleanings")
    op.create_index("ix_cleanings_owner", "cleanings", ["owner"])
    op.drop_index("ix_cleanings_owner_id", table_name="cleanings")
    op.drop_index("ix_cleanings_updated_at_id", table_name="cleanings")
    op.drop_index("ix_cleanings_created_at_id", table_name="cleanings")
