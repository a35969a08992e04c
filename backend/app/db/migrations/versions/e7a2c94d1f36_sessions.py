"""sessions: one per login, with single-use refresh tokens stored as hashes

Revision ID: e7a2c94d1f36
Revises: c4e1f0a93b27
Create Date: 2026-11-29

Every access token names its session (`sid`), and every authenticated request checks that the
session is alive. A session ends by logout, by its absolute lifetime, by an idle timeout, by a
refresh token used twice, a password change elsewhere or a deactivation. Refresh tokens are kept as
SHA-256 hashes only; a used one keeps its successor sealed with a key that only the used token
yields, for the grace window in which a client that refreshed twice at once gets the same answer.
Tokens minted before this revision name no session and stop working: their users log in again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7a2c94d1f36"
down_revision: str | None = "c4e1f0a93b27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        sa.text(
            """
            CREATE TABLE sessions (
                id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                user_id integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                created_at timestamptz NOT NULL DEFAULT now(),
                last_used_at timestamptz NOT NULL DEFAULT now(),
                expires_at timestamptz NOT NULL,
                ended_at timestamptz,
                end_reason text,
                client_address text,
                user_agent text,
                CONSTRAINT ck_sessions_end_has_reason CHECK ((ended_at IS NULL) = (end_reason IS NULL))
            )
            """
        )
    )
    # A user's live sessions (listing them, ending them all), and old ones to purge.
    op.execute(
        sa.text("CREATE INDEX ix_sessions_user_id_live ON sessions (user_id, created_at) WHERE ended_at IS NULL")
    )
    op.execute(sa.text("CREATE INDEX ix_sessions_user_id ON sessions (user_id)"))
    op.execute(
        sa.text(
            """
            CREATE TABLE refresh_tokens (
                token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
                session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                created_at timestamptz NOT NULL DEFAULT now(),
                used_at timestamptz,
                successor_sealed bytea CHECK (octet_length(successor_sealed) = 32),
                CONSTRAINT ck_refresh_tokens_used_has_successor CHECK ((used_at IS NULL) = (successor_sealed IS NULL))
            )
            """
        )
    )
    op.execute(sa.text("CREATE INDEX ix_refresh_tokens_session_id ON refresh_tokens (session_id)"))


def downgrade() -> None:
    op.execute(sa.text("DROP TABLE refresh_tokens"))
    op.execute(sa.text("DROP TABLE sessions"))
