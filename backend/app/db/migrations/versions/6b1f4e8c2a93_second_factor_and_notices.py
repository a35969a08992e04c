"""second factor (TOTP) and account notices: the factor, its recovery codes, its login challenges; notice mails

Revision ID: 6b1f4e8c2a93
Revises: 1c9e5b7a3d20
Create Date: 2026-12-06

`second_factors`: one row per user who has begun enrolling. The TOTP secret is kept sealed
(AES-GCM, with a key derived from SECRET_KEY: app/services/mfa.py), never in clear. The factor is
on once `enabled_at` is set (the enrolment confirmed with a code). `last_used_step` is the RFC 6238
time step of the last code accepted: a code is taken by a conditional UPDATE (`WHERE last_used_step
< :step`), so the database lets each code through once, whichever worker asks.

`recovery_codes`: ten per enrolment, kept as keyed hashes (HMAC-SHA256), each spent at most once.

`mfa_challenges`: the password step of a login for an account with the factor on; its token (kept
as a SHA-256 hash) serves only the second step, for five minutes, once, and only while the
account's token version is the one it was made under (a password change voids it).

`outbox_messages`: the account notices join the kinds a message may have (password changed, email
changed, factor on, off or reset by a superuser, account deleted), with `details` (what a notice
says: the username, the time, the client address), which no earlier kind uses.

Downgrade: the notices not yet sent are dropped (the older code cannot write them), then the kind
check is the older one again; the tables go (a factor that was on is off).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6b1f4e8c2a93"
down_revision: str | None = "1c9e5b7a3d20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EARLIER_KINDS = ("email_verification", "password_reset")
NOTICE_KINDS = (
    "password_changed",
    "email_changed",
    "mfa_enabled",
    "mfa_disabled",
    "mfa_reset",
    "account_deleted",
)


def _kinds(kinds: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{kind}'" for kind in kinds) + ")"


def upgrade() -> None:
    op.execute(
        sa.text(
            """
            CREATE TABLE second_factors (
                user_id integer PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
                secret_sealed bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                enabled_at timestamptz,
                last_used_step bigint NOT NULL DEFAULT 0
            )
            """
        )
    )
    op.execute(
        sa.text(
            """
            CREATE TABLE recovery_codes (
                id bigserial PRIMARY KEY,
                user_id integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                code_hash bytea NOT NULL CHECK (octet_length(code_hash) = 32),
                created_at timestamptz NOT NULL DEFAULT now(),
                used_at timestamptz,
                CONSTRAINT uq_recovery_codes_user_id_code_hash UNIQUE (user_id, code_hash)
            )
            """
        )
    )
    op.execute(
        sa.text(
            """
            CREATE TABLE mfa_challenges (
                token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
                user_id integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                token_version integer NOT NULL,
                client_address text,
                created_at timestamptz NOT NULL DEFAULT now(),
                expires_at timestamptz NOT NULL,
                used_at timestamptz
            )
            """
        )
    )
    op.execute(sa.text("CREATE INDEX ix_mfa_challenges_user_id ON mfa_challenges (user_id)"))
    op.execute(sa.text("CREATE INDEX ix_mfa_challenges_expires_at ON mfa_challenges (expires_at)"))
    op.execute(sa.text("ALTER TABLE outbox_messages ADD COLUMN details jsonb"))
    # The kind check, unnamed in the revision that made the table, is replaced by a named, wider one.
    op.execute(sa.text("ALTER TABLE outbox_messages DROP CONSTRAINT outbox_messages_kind_check"))
    op.execute(
        sa.text(
            "ALTER TABLE outbox_messages ADD CONSTRAINT ck_outbox_messages_kind"
            f" CHECK (kind IN {_kinds(EARLIER_KINDS + NOTICE_KINDS)})"
        )
    )


def downgrade() -> None:
    op.execute(sa.text(f"DELETE FROM outbox_messages WHERE kind IN {_kinds(NOTICE_KINDS)}"))
    op.execute(sa.text("ALTER TABLE outbox_messages DROP CONSTRAINT ck_outbox_messages_kind"))
    op.execute(
        sa.text(
            "ALTER TABLE outbox_messages ADD CONSTRAINT outbox_messages_kind_check"
            f" CHECK (kind IN {_kinds(EARLIER_KINDS)})"
        )
    )
    op.execute(sa.text("ALTER TABLE outbox_messages DROP COLUMN details"))
    op.execute(sa.text("DROP TABLE mfa_challenges"))
    op.execute(sa.text("DROP TABLE recovery_codes"))
    op.execute(sa.text("DROP TABLE second_factors"))
