"""profiles (Part 9): one per user, enforced by the database

Revision ID: 5e8a41c7d2f3
Revises: b3d9f15e6a72
Create Date: 2026-11-29

Every user has exactly one profile:
- `user_id` is NOT NULL and unique, and the profile goes when its user goes (ON DELETE CASCADE);
- users that exist before this revision get an empty profile here;
- deferred constraint triggers refuse, at commit, a transaction that leaves a user without a
  profile: a user inserted without one, or a profile deleted (or moved) while its user stays.
  Registration inserts both in one transaction, so it never meets them; they guard every other
  path (a script, a psql session, a future bug).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e8a41c7d2f3"
down_revision: str | None = "b3d9f15e6a72"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def create_profiles_table() -> None:
    op.create_table(
        "profiles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("full_name", sa.Text, nullable=True),
        sa.Column("phone_number", sa.Text, nullable=True),
        sa.Column("bio", sa.Text, nullable=True),
        sa.Column("image", sa.Text, nullable=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    # One profile per user; also the index every lookup by user goes through.
    op.create_index("ix_profiles_user_id", "profiles", ["user_id"], unique=True)
    op.execute(
        sa.text(
            """
            CREATE TRIGGER update_profiles_modtime
                BEFORE UPDATE ON profiles
                FOR EACH ROW
            EXECUTE PROCEDURE update_updated_at_column();
            """
        )
    )


def create_profile_guards() -> None:
    op.execute(
        sa.text(
            """
            CREATE FUNCTION ensure_user_has_profile()
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
                IF EXISTS (SELECT 1 FROM users WHERE id = checked_id)
                   AND NOT EXISTS (SELECT 1 FROM profiles WHERE user_id = checked_id) THEN
                    RAISE EXCEPTION 'user % has no profile', checked_id
                        USING ERRCODE = 'integrity_constraint_violation';
                END IF;
                RETURN NULL;
            END;
            $$ LANGUAGE plpgsql;
            """
        )
    )
    op.execute(
        sa.text(
            """
            CREATE CONSTRAINT TRIGGER users_have_profiles
                AFTER INSERT ON users
                DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW
            EXECUTE FUNCTION ensure_user_has_profile();
            """
        )
    )
    op.execute(
        sa.text(
            """
            CREATE CONSTRAINT TRIGGER profiles_stay_with_users
                AFTER DELETE OR UPDATE OF user_id ON profiles
                DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW
            EXECUTE FUNCTION ensure_user_has_profile();
            """
        )
    )


def upgrade() -> None:
    create_profiles_table()
    op.execute(sa.text("INSERT INTO profiles (user_id) SELECT id FROM users ORDER BY id"))
    create_profile_guards()


def downgrade() -> None:
    op.execute(sa.text("DROP TRIGGER profiles_stay_with_users ON profiles"))
    op.execute(sa.text("DROP TRIGGER users_have_profiles ON users"))
    op.execute(sa.text("DROP FUNCTION ensure_user_has_profile"))
    op.drop_table("profiles")
