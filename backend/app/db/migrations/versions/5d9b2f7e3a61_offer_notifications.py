"""offer notifications: mail about offers, each kind on or off per user

Revision ID: 5d9b2f7e3a61
Revises: 4c8e1a6d9f27
Create Date: 2026-12-08

Mail about the marketplace (issue 24, "Hearing about offers"), written to the outbox in the
transaction of the offer change it reports (app/db/repositories/notifications.py):

- `outbox_messages.kind` takes four more kinds: `offer_received` (to a cleaning's owner: the
  offers that came in, at most one mail per cleaning per OFFER_DIGEST_MINUTES), `offer_accepted`
  and `offer_rejected` (to the cleaner who made the offer), `offer_cancelled` (to the owner: the
  cleaner backed out of an accepted offer).
- `outbox_messages.cleaning_id`: the cleaning such a mail is about, no foreign key (a mail
  outlives its cleaning; one about a cleaning that is gone is skipped or says so when sent).
  Nullable, no default: nothing changes for the rows there are, nor for the release before.
- `ix_outbox_messages_offer_digests`: a cleaning's `offer_received` rows, found by cleaning (the
  digest a new offer joins, and when the last one went out) whatever the size of the outbox.
- `notification_preferences`: a row per user and kind the user has set; no row is the kind's
  default (on). Gone with its user.

Downgrade: the offer mails not yet sent are dropped (the older code cannot send them), the rest
too (the older kind check refuses them); then the kind check is the older one again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d9b2f7e3a61"
down_revision: str | None = "4c8e1a6d9f27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EARLIER_KINDS = (
    "email_verification",
    "password_reset",
    "password_changed",
    "email_changed",
    "mfa_enabled",
    "mfa_disabled",
    "mfa_reset",
    "account_deleted",
)
OFFER_KINDS = ("offer_received", "offer_accepted", "offer_rejected", "offer_cancelled")


def _kinds(kinds: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{kind}'" for kind in kinds) + ")"


def upgrade() -> None:
    op.execute(sa.text("ALTER TABLE outbox_messages DROP CONSTRAINT ck_outbox_messages_kind"))
    op.execute(
        sa.text(
            "ALTER TABLE outbox_messages ADD CONSTRAINT ck_outbox_messages_kind"
            f" CHECK (kind IN {_kinds(EARLIER_KINDS + OFFER_KINDS)})"
        )
    )
    op.execute(sa.text("ALTER TABLE outbox_messages ADD COLUMN cleaning_id integer"))
    op.execute(
        sa.text(
            "CREATE INDEX ix_outbox_messages_offer_digests ON outbox_messages (cleaning_id, id)"
            " WHERE kind = 'offer_received'"
        )
    )
    op.execute(
        sa.text(
            f"""
            CREATE TABLE notification_preferences (
                user_id integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                kind text NOT NULL CHECK (kind IN {_kinds(OFFER_KINDS)}),
                enabled boolean NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (user_id, kind)
            )
            """
        )
    )


def downgrade() -> None:
    op.execute(sa.text("DROP TABLE notification_preferences"))
    op.execute(sa.text(f"DELETE FROM outbox_messages WHERE kind IN {_kinds(OFFER_KINDS)}"))
    op.execute(sa.text("DROP INDEX ix_outbox_messages_offer_digests"))
    op.execute(sa.text("ALTER TABLE outbox_messages DROP COLUMN cleaning_id"))
    op.execute(sa.text("ALTER TABLE outbox_messages DROP CONSTRAINT ck_outbox_messages_kind"))
    op.execute(
        sa.text(
            "ALTER TABLE outbox_messages ADD CONSTRAINT ck_outbox_messages_kind"
            f" CHECK (kind IN {_kinds(EARLIER_KINDS)})"
        )
    )
