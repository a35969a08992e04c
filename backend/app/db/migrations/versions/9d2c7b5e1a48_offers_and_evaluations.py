"""offers (Part 11) and evaluations (Part 12), with what must never happen refused by the database

Revision ID: 9d2c7b5e1a48
Revises: 5e8a41c7d2f3
Create Date: 2026-11-29

- One offer per user per cleaning: the primary key (user_id, cleaning_id).
- At most one accepted offer per cleaning: a unique index on cleaning_id over the offers that are
  accepted or completed (a completed offer is an accepted one whose work was evaluated).
- An offer's status is one of the five the API knows.
- One evaluation per offer: the primary key (cleaning_id, cleaner_id), and a foreign key to the
  offer it evaluates, so no evaluation exists without an offer.
- Ratings from 0 to 5.
- Every foreign key cascades: deleting a user or a cleaning can never fail on them (the tutorial's
  SET NULL on NOT NULL columns did). The API refuses to delete a cleaning whose offer was accepted
  or completed (see the cleanings repository), so a cleaner's evaluations do not vanish with it.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "9d2c7b5e1a48"
down_revision: str | None = "5e8a41c7d2f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OFFER_STATUSES = ("pending", "accepted", "rejected", "cancelled", "completed")


def timestamps() -> tuple[sa.Column[Any], sa.Column[Any]]:
    return (
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def add_updated_at_trigger(table: str) -> None:
    op.execute(
        sa.text(
            f"""
            CREATE TRIGGER update_{table}_modtime
                BEFORE UPDATE ON {table}
                FOR EACH ROW
            EXECUTE PROCEDURE update_updated_at_column();
            """
        )
    )


def create_offers_table() -> None:
    statuses = ", ".join(f"'{status}'" for status in OFFER_STATUSES)
    op.create_table(
        "user_offers_for_cleanings",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("cleaning_id", sa.Integer, sa.ForeignKey("cleanings.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        *timestamps(),
        sa.PrimaryKeyConstraint("user_id", "cleaning_id", name="pk_user_offers_for_cleanings"),
        sa.CheckConstraint(f"status IN ({statuses})", name="ck_user_offers_for_cleanings_status"),
    )
    # The offers of a cleaning (the primary key serves those of a user).
    op.create_index("ix_user_offers_for_cleanings_cleaning_id", "user_offers_for_cleanings", ["cleaning_id"])
    op.create_index(
        "ix_user_offers_for_cleanings_one_accepted",
        "user_offers_for_cleanings",
        ["cleaning_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('accepted', 'completed')"),
    )
    add_updated_at_trigger("user_offers_for_cleanings")


def create_evaluations_table() -> None:
    def rating(name: str, *, nullable: bool = True) -> sa.Column[int]:
        return sa.Column(name, sa.Integer, sa.CheckConstraint(f"{name} BETWEEN 0 AND 5"), nullable=nullable)

    op.create_table(
        "cleaning_to_cleaner_evaluations",
        sa.Column("cleaning_id", sa.Integer, sa.ForeignKey("cleanings.id", ondelete="CASCADE"), nullable=False),
        sa.Column("cleaner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("no_show", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("headline", sa.Text, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        rating("professionalism"),
        rating("completeness"),
        rating("efficiency"),
        rating("overall_rating", nullable=False),
        *timestamps(),
        sa.PrimaryKeyConstraint("cleaning_id", "cleaner_id", name="pk_cleaning_to_cleaner_evaluations"),
        sa.ForeignKeyConstraint(
            ["cleaner_id", "cleaning_id"],
            ["user_offers_for_cleanings.user_id", "user_offers_for_cleanings.cleaning_id"],
            name="fk_cleaning_to_cleaner_evaluations_offer",
            ondelete="CASCADE",
        ),
    )
    # A cleaner's evaluations and stats.
    op.create_index("ix_cleaning_to_cleaner_evaluations_cleaner_id", "cleaning_to_cleaner_evaluations", ["cleaner_id"])
    add_updated_at_trigger("cleaning_to_cleaner_evaluations")


def upgrade() -> None:
    create_offers_table()
    create_evaluations_table()


def downgrade() -> None:
    op.drop_table("cleaning_to_cleaner_evaluations")
    op.drop_table("user_offers_for_cleanings")
