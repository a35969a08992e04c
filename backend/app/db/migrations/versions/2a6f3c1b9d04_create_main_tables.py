"""create main tables: users and cleanings, with timestamps kept by a trigger

Revision ID: 2a6f3c1b9d04
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "2a6f3c1b9d04"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def timestamps() -> tuple[sa.Column[Any], sa.Column[Any]]:
    return (
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def create_updated_at_trigger() -> None:
    op.execute(
        sa.text(
            """
            CREATE OR REPLACE FUNCTION update_updated_at_column()
                RETURNS TRIGGER AS
            $$
            BEGIN
                NEW.updated_at = now();
                RETURN NEW;
            END;
            $$ language 'plpgsql';
            """
        )
    )


def add_updated_at_trigger(table: str) -> None:
    op.execute(
        sa.text(
            f"""
            CREATE TRIGGER update_{table}_modtime
                BEFORE UPDATE
                ON {table}
                FOR EACH ROW
            EXECUTE PROCEDURE update_updated_at_column();
            """
        )
    )


def create_cleanings_table() -> None:
    op.create_table(
        "cleanings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, index=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("cleaning_type", sa.Text, nullable=False, server_default="spot_clean"),
        sa.Column("price", sa.Numeric(10, 2), nullable=False),
        *timestamps(),
        sa.CheckConstraint(
            "cleaning_type IN ('dust_up', 'spot_clean', 'full_clean')", name="ck_cleanings_cleaning_type"
        ),
    )
    add_updated_at_trigger("cleanings")


def create_users_table() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("email_verified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("salt", sa.Text, nullable=False),
        sa.Column("password", sa.Text, nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("is_superuser", sa.Boolean, nullable=False, server_default=sa.false()),
        *timestamps(),
    )
    # The repository maps a violation of each of these names to its "already taken" error.
    op.create_index("ix_users_username", "users", ["username"], unique=True)
    op.create_index("ix_users_email", "users", ["email"], unique=True)
    add_updated_at_trigger("users")


def upgrade() -> None:
    create_updated_at_trigger()
    create_cleanings_table()
    create_users_table()


def downgrade() -> None:
    op.drop_table("users")
    op.drop_table("cleanings")
    op.execute(sa.text("DROP FUNCTION update_updated_at_column"))
