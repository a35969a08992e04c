"""emails and usernames unique whatever their case; login throttling; the security event log

Revision ID: b3d9f15e6a72
Revises: 7c41e0d2a9b5
Create Date: 2026-11-28

Existing accounts whose email or username differ only in case are kept, none deleted: the oldest
account keeps the name, and each later one is renamed so the new unique indexes can be built.
A later duplicate username becomes `<username>_<id>`; a later duplicate email becomes
`duplicate-<id>@phresh.invalid` (the `.invalid` domain can belong to nobody), and the address it had
is kept in a `email_deduplicated` security event. Those users still log in with their username and
can set a new email.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3d9f15e6a72"
down_revision: str | None = "7c41e0d2a9b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def create_security_events_table() -> None:
    op.create_table(
        "security_events",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        # Kept when the user is deleted: the trail outlives the account.
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("client_address", sa.Text, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_security_events_created_at", "security_events", ["created_at"])
    op.create_index("ix_security_events_user_id", "security_events", ["user_id"])


def deduplicate_names() -> None:
    op.execute(
        sa.text(
            """
            WITH ranked AS (
                SELECT id, email, row_number() OVER (PARTITION BY lower(email) ORDER BY id) AS rank
                FROM users
            ), renamed AS (
                UPDATE users
                SET email = 'duplicate-' || users.id || '@phresh.invalid', email_verified = false
                FROM ranked
                WHERE users.id = ranked.id AND ranked.rank > 1
                RETURNING users.id, ranked.email AS old_email
            )
            INSERT INTO security_events (kind, user_id, detail)
            SELECT 'email_deduplicated', id, 'email was ' || old_email FROM renamed;
            """
        )
    )
    op.execute(
        sa.text(
            """
            WITH ranked AS (
                SELECT id, row_number() OVER (PARTITION BY lower(username) ORDER BY id) AS rank
                FROM users
            )
            UPDATE users
            SET username = left(users.username, 20) || '_' || users.id
            FROM ranked
            WHERE users.id = ranked.id AND ranked.rank > 1;
            """
        )
    )


def upgrade() -> None:
    create_security_events_table()
    deduplicate_names()
    # Unique whatever the case; every lookup compares lower() to lower(), so these serve them too.
    op.drop_index("ix_users_email", table_name="users")
    op.drop_index("ix_users_username", table_name="users")
    op.execute(sa.text("CREATE UNIQUE INDEX ix_users_email ON users (lower(email))"))
    op.execute(sa.text("CREATE UNIQUE INDEX ix_users_username ON users (lower(username))"))

    # One row per counted attempt (a failed login, a registration), in sliding windows.
    op.create_table(
        "rate_limit_hits",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("bucket", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_rate_limit_hits_bucket_key_created_at", "rate_limit_hits", ["bucket", "key", "created_at"])
    op.create_index("ix_rate_limit_hits_created_at", "rate_limit_hits", ["created_at"])


def downgrade() -> None:
    op.drop_table("rate_limit_hits")
    op.drop_index("ix_users_email", table_name="users")
    op.drop_index("ix_users_username", table_name="users")
    op.create_index("ix_users_username", "users", ["username"], unique=True)
    op.create_index("ix_users_email", "users", ["email"], unique=True)
    op.drop_table("security_events")
