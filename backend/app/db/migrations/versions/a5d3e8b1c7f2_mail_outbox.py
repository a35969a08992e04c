"""mail: a transactional outbox, and single-use tokens for email verification and password reset

Revision ID: a5d3e8b1c7f2
Revises: e7a2c94d1f36
Create Date: 2026-11-29

A message is a row of `outbox_messages`, written in the transaction of what causes it (a
registration, an email change, a reset request), and sent later by a background sender: a mail
server that is down, or a restart, delays it and loses nothing. A sender claims one message at a
time (`FOR UPDATE SKIP LOCKED`, then a lease in `claimed_until`), so no two workers send the same.
The token a message carries is made when it is sent, and only its SHA-256 is kept, in
`account_tokens`: bound to the email it verifies, or to the user's token version (which every
password change bumps) for a reset.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a5d3e8b1c7f2"
down_revision: str | None = "e7a2c94d1f36"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "('email_verification', 'password_reset')"


def upgrade() -> None:
    op.execute(
        sa.text(
            f"""
            CREATE TABLE outbox_messages (
                id bigserial PRIMARY KEY,
                kind text NOT NULL CHECK (kind IN {KINDS}),
                recipient text NOT NULL,
                user_id integer REFERENCES users (id) ON DELETE CASCADE,
                client_address text,
                created_at timestamptz NOT NULL DEFAULT now(),
                next_attempt_at timestamptz NOT NULL DEFAULT now(),
                claimed_until timestamptz,
                attempts integer NOT NULL DEFAULT 0,
                last_error text,
                outcome text CHECK (outcome IN ('sent', 'skipped', 'failed')),
                finished_at timestamptz,
                CONSTRAINT ck_outbox_messages_outcome_finished CHECK ((outcome IS NULL) = (finished_at IS NULL))
            )
            """
        )
    )
    # What is due: the sender's one query, through this index whatever the table's size.
    op.execute(
        sa.text("CREATE INDEX ix_outbox_messages_due ON outbox_messages (next_attempt_at, id) WHERE outcome IS NULL")
    )
    op.execute(sa.text("CREATE INDEX ix_outbox_messages_user_id ON outbox_messages (user_id)"))
    op.execute(
        sa.text(
            f"""
            CREATE TABLE account_tokens (
                id bigserial PRIMARY KEY,
                message_id bigint NOT NULL UNIQUE REFERENCES outbox_messages (id) ON DELETE CASCADE,
                purpose text NOT NULL CHECK (purpose IN {KINDS}),
                user_id integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
                email text,
                token_version integer,
                created_at timestamptz NOT NULL DEFAULT now(),
                expires_at timestamptz NOT NULL,
                used_at timestamptz,
                CONSTRAINT ck_account_tokens_bound CHECK (
                    (purpose = 'email_verification' AND email IS NOT NULL)
                    OR (purpose = 'password_reset' AND token_version IS NOT NULL)
                )
            )
            """
        )
    )
    op.execute(sa.text("CREATE INDEX ix_account_tokens_user_id ON account_tokens (user_id)"))


def downgrade() -> None:
    op.execute(sa.text("DROP TABLE account_tokens"))
    op.execute(sa.text("DROP TABLE outbox_messages"))
