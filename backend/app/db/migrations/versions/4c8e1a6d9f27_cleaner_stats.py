"""cleaner_stats: each cleaner's evaluation statistics, kept up to date by the database

Revision ID: 4c8e1a6d9f27
Revises: 3f7a9c2e5b14
Create Date: 2026-12-08

GET /api/profiles/ (app/db/repositories/cleaners.py) lists cleaners with the figures of Part 12's
stats route, sorted by rating or by completed jobs. Computing those figures per request would read
every evaluation of every cleaner; instead one row per cleaner holds what they are made of, and a
page is a range scan of one index.

- A row per user with at least one evaluation received: the counts per overall rating (0 to 5),
  of no-shows and in all, and per rated field its sum and how many evaluations rated it. The
  averages are sum / count in float8: exactly what AVG(x::float8) answers (PostgreSQL's float8
  average is its float8 sum divided by the count, and sums of small integers are exact), so the
  list and the stats route agree to the last bit. The lowest and highest overall rating are the
  first and last rating whose count is not 0.
- `rating`: a Bayesian average, (PRIOR_WEIGHT x PRIOR_MEAN + the sum of overall ratings) /
  (PRIOR_WEIGHT + evaluations): each cleaner starts from PRIOR_WEIGHT evaluations of PRIOR_MEAN
  stars, so one 5-star evaluation (3.33) does not beat a hundred of 4.5 stars (4.43). A generated
  column: the index orders by it, so the prior is part of the schema, not a setting; changing it
  is a new revision that drops and adds the column again (every row recomputed with it).
- Kept by a trigger on cleaning_to_cleaner_evaluations, in the transaction of every change to an
  evaluation: its creation, and every deletion, including the cascades (a cleaning, an offer or a
  user deleted) and an account deletion's delete of the evaluations it received, which no
  repository method sees one by one. Each change is one INSERT ... ON CONFLICT DO UPDATE or one
  UPDATE of increments, under the row's lock: two evaluations of one cleaner at once both count.
  A row whose last evaluation goes is deleted: a cleaner without evaluations is not listed.
- The rows for the evaluations there are, filled while the evaluations are locked against writes
  (this revision's transaction), so that none is counted twice or missed.
- Indexes (rating, cleaner_id) and (total_evaluations, cleaner_id): each sort order's page is a
  backward range scan from the cursor that stops after a page.

Only adds: the release before this one neither reads nor writes the table, and its evaluations
are counted by the trigger as well.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4c8e1a6d9f27"
down_revision: str | None = "3f7a9c2e5b14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The prior of the Bayesian average: every cleaner starts from PRIOR_WEIGHT evaluations of
# PRIOR_MEAN stars (app/models/cleaner.py repeats them for the API's description; a test compares).
PRIOR_MEAN = 3
PRIOR_WEIGHT = 5

STARS = ("zero_stars", "one_stars", "two_stars", "three_stars", "four_stars", "five_stars")
RATED_FIELDS = ("professionalism", "completeness", "efficiency")

_COUNTS = ", ".join(f"{column} integer NOT NULL DEFAULT 0 CHECK ({column} >= 0)" for column in STARS)
_SUMS = ", ".join(
    f"{field}_sum bigint NOT NULL DEFAULT 0, {field}_count integer NOT NULL DEFAULT 0 CHECK ({field}_count >= 0)"
    for field in RATED_FIELDS
)
CREATE_TABLE = f"""
    CREATE TABLE cleaner_stats (
        cleaner_id integer PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        total_evaluations integer NOT NULL DEFAULT 0,
        total_no_show integer NOT NULL DEFAULT 0 CHECK (total_no_show >= 0),
        {_COUNTS},
        overall_rating_sum bigint NOT NULL DEFAULT 0,
        {_SUMS},
        rating float8 GENERATED ALWAYS AS (
            ({PRIOR_WEIGHT * PRIOR_MEAN} + overall_rating_sum)::float8 / ({PRIOR_WEIGHT} + total_evaluations)
        ) STORED,
        CONSTRAINT ck_cleaner_stats_counted CHECK (total_evaluations > 0 AND total_evaluations = {" + ".join(STARS)})
    )
"""

# What one evaluation `e` adds to its cleaner's row (the columns, and each one's value).
_ADDED = {
    "total_evaluations": "1",
    "total_no_show": "e.no_show::int",
    **{column: f"(e.overall_rating = {stars})::int" for stars, column in enumerate(STARS)},
    "overall_rating_sum": "e.overall_rating",
    **{f"{field}_sum": f"coalesce(e.{field}, 0)" for field in RATED_FIELDS},
    **{f"{field}_count": f"(e.{field} IS NOT NULL)::int" for field in RATED_FIELDS},
}
_INSERT_COLUMNS = ", ".join(_ADDED)
_INSERT_VALUES = ", ".join(_ADDED.values())
_ADD_ON_CONFLICT = ", ".join(f"{column} = cleaner_stats.{column} + EXCLUDED.{column}" for column in _ADDED)
_SUBTRACT = ", ".join(f"{column} = {column} - {value}" for column, value in _ADDED.items())

# An evaluation that goes takes its cleaner's row with it when it was the last (the check allows
# no row without evaluations), else subtracts itself; one that comes adds itself, or makes the row.
# Under READ COMMITTED each statement waits for the row's lock and then sees the row as the other
# transaction left it, so concurrent changes never lose one another's counts.
KEEP_CLEANER_STATS = f"""
    CREATE FUNCTION keep_cleaner_stats()
        RETURNS TRIGGER AS
    $$
    DECLARE
        e cleaning_to_cleaner_evaluations;
    BEGIN
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            e := OLD;
            DELETE FROM cleaner_stats WHERE cleaner_id = e.cleaner_id AND total_evaluations = 1;
            IF NOT FOUND THEN
                UPDATE cleaner_stats SET {_SUBTRACT} WHERE cleaner_id = e.cleaner_id;
            END IF;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            e := NEW;
            INSERT INTO cleaner_stats (cleaner_id, {_INSERT_COLUMNS})
            VALUES (e.cleaner_id, {_INSERT_VALUES})
            ON CONFLICT (cleaner_id) DO UPDATE SET {_ADD_ON_CONFLICT};
        END IF;
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql;
"""

BACKFILL = f"""
    INSERT INTO cleaner_stats (cleaner_id, {_INSERT_COLUMNS})
    SELECT e.cleaner_id, {", ".join(f"sum({value})" for value in _ADDED.values())}
    FROM cleaning_to_cleaner_evaluations e
    GROUP BY e.cleaner_id
"""


def upgrade() -> None:
    # No evaluation is written (nor deleted) between the backfill and the trigger: both in this
    # transaction, behind a lock that lets reads through.
    op.execute(sa.text("LOCK TABLE cleaning_to_cleaner_evaluations IN SHARE ROW EXCLUSIVE MODE"))
    op.execute(sa.text(CREATE_TABLE))
    op.execute(sa.text(KEEP_CLEANER_STATS))
    op.execute(
        sa.text(
            "CREATE TRIGGER cleaner_stats_kept"
            " AFTER INSERT OR DELETE OR UPDATE OF cleaner_id, no_show, professionalism, completeness, efficiency,"
            " overall_rating ON cleaning_to_cleaner_evaluations"
            " FOR EACH ROW EXECUTE FUNCTION keep_cleaner_stats()"
        )
    )
    op.execute(sa.text(BACKFILL))
    op.execute(sa.text("CREATE INDEX ix_cleaner_stats_rating ON cleaner_stats (rating, cleaner_id)"))
    op.execute(sa.text("CREATE INDEX ix_cleaner_stats_completed_jobs ON cleaner_stats (total_evaluations, cleaner_id)"))


def downgrade() -> None:
    op.execute(sa.text("DROP TRIGGER cleaner_stats_kept ON cleaning_to_cleaner_evaluations"))
    op.execute(sa.text("DROP FUNCTION keep_cleaner_stats()"))
    op.execute(sa.text("DROP TABLE cleaner_stats"))
