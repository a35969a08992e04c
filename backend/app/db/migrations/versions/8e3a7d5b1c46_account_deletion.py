"""account deletion: a deleted user stays as a scrubbed tombstone (`users.deleted_at`)

Revision ID: 8e3a7d5b1c46
Revises: 6b1f4e8c2a93
Create Date: 2026-12-06

A user who deletes their account (DELETE /api/users/me/, app/db/repositories/account.py) keeps
their `users` row, emptied of everything personal: `deleted_at` is set; the username and email
become `deleted-user.<id>` and `deleted-<id>@phresh.invalid`, which nobody can register or log in
with (usernames have no dot, `.invalid` addresses are refused); the password cannot match; the
account is inactive and its token version bumped. The row stays so that what others still need
keeps its foreign keys: a cleaning with an accepted or completed offer (shown with its owner as
that deleted user), a completed offer and the evaluations the user wrote, the audit trail's events
by user id (security_events.user_id keeps the id through its existing foreign key).

- `deleted_at`: nullable, no default: nothing changes for the rows there are.
- `ck_users_deleted_inactive`: a tombstone is never active nor a superuser, so no path (a
  reactivation, `make_superuser`, a script, the release before this one) brings it back.
  Every existing row has `deleted_at` NULL, so it holds at once.
- A tombstone has no profile: the deferred trigger that makes every user keep one
  (5e8a41c7d2f3) now leaves deleted users out.

Downgrade: tombstones get an empty profile again and the older trigger and columns come back;
they stay what the older code sees as deactivated users whose password matches nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8e3a7d5b1c46"
down_revision: str | None = "6b1f4e8c2a93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def profile_guard(*, for_deleted_users: bool) -> str:
    """The function behind the deferred profile triggers: a user without a profile is refused at
    commit (a deleted one too, unless `for_deleted_users`)."""
    alive = " AND deleted_at IS NULL" if for_deleted_users else ""
    return f"""
        CREATE OR REPLACE FUNCTION ensure_user_has_profile()
            RETURNS TRIGGER AS
        $$
        DECLARE
            checked_id integer;
        BEGIN
            IF TG_TABLE_NAME = 'users' THEN
                checked_id := NEW.id;
            ELSE
                checked_id := OLD.user_id;
            END IF;
            IF EXISTS (SELECT 1 FROM users WHERE id = checked_id{alive})
               AND NOT EXISTS (SELECT 1 FROM profiles WHERE user_id = checked_id) THEN
                RAISE EXCEPTION 'user % has no profile', checked_id
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql;
    """


def upgrade() -> None:
    op.execute(sa.text("ALTER TABLE users ADD COLUMN deleted_at timestamptz"))
    op.execute(
        sa.text(
            "ALTER TABLE users ADD CONSTRAINT ck_users_deleted_inactive"
            " CHECK (deleted_at IS NULL OR (NOT is_active AND NOT is_superuser))"
        )
    )
    op.execute(sa.text(profile_guard(for_deleted_users=True)))


def downgrade() -> None:
    op.execute(
        sa.text(
            "INSERT INTO profiles (user_id) SELECT id FROM users u"
            " WHERE deleted_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM profiles p WHERE p.user_id = u.id)"
        )
    )
    op.execute(sa.text(profile_guard(for_deleted_users=False)))
    op.execute(sa.text("ALTER TABLE users DROP CONSTRAINT ck_users_deleted_inactive"))
    op.execute(sa.text("ALTER TABLE users DROP COLUMN deleted_at"))
