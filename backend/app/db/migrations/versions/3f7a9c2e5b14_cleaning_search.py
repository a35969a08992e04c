"""cleaning search (issue 24): a stored, weighted tsvector of each cleaning, a GIN index on it, and
a (price, id) index for the price sorts

Revision ID: 3f7a9c2e5b14
Revises: 8e3a7d5b1c46
Create Date: 2026-12-08

GET /api/cleanings/search/ (app/db/repositories/search.py) matches `websearch_to_tsquery` against
`cleanings.search_vector`: the name (weight A) and the description (weight B), stemmed with the
text search configuration `cleaning_search_config()` returns.

- `cleaning_search_config()`: an IMMUTABLE SQL function returning SEARCH_LANGUAGE as it was when
  this revision ran (checked against pg_ts_config here, so a typo fails the migration, not a
  search). The column and every query call it, so the words stored and the words searched for
  are always stemmed alike; PostgreSQL inlines it into a constant. Changing the language later is
  an operation of its own (docs/configuration.md, SEARCH_LANGUAGE): the function is replaced and
  the column rebuilt; until then old rows keep their old stems.
- `search_vector`: a STORED generated column rather than an expression index. A search sorted by
  date or price walks a b-tree and tests each row it passes against the query; with a stored
  vector that test is a comparison of lexemes (about a microsecond), with an expression index it
  would be a `to_tsvector` of the whole text per row (tens of microseconds), and every ranking
  would parse the text again. The price: adding the column rewrites `cleanings` once, under an
  ACCESS EXCLUSIVE lock (reads and writes of cleanings wait; measured in docs/performance.md,
  "Search"). A trigger-filled plain column would avoid the rewrite, but its backfill would be an
  UPDATE of every row, which the updated_at trigger turns into a million feed "update" events.
  The column is nullable and computed by PostgreSQL: the release before this one, which never
  names it, inserts and updates as before.
- The two indexes are built CONCURRENTLY (outside the migration's transaction), so writes go on
  while they are built. A failed concurrent build leaves an INVALID index behind; it is dropped
  (concurrently) before the build, so running the migration again repairs it.

Downgrade: the indexes, the column and the function go (the release before never used them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f7a9c2e5b14"
down_revision: str | None = "8e3a7d5b1c46"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_VECTOR = (
    "setweight(to_tsvector(cleaning_search_config(), coalesce(name, '')), 'A')"
    " || setweight(to_tsvector(cleaning_search_config(), coalesce(description, '')), 'B')"
)
INDEXES = {
    "ix_cleanings_search_vector": "ON cleanings USING gin (search_vector)",
    # The price sorts walk it forwards (price_asc) or backwards (price_desc).
    "ix_cleanings_price_id": "ON cleanings (price, id)",
}


def search_language() -> str:
    from app.core.config import SEARCH_LANGUAGE

    return SEARCH_LANGUAGE


def upgrade() -> None:
    language = search_language()
    known = op.get_bind().execute(
        sa.text("SELECT count(*) FROM pg_ts_config WHERE cfgname = :language"), {"language": language}
    )
    if known.scalar() != 1:
        raise RuntimeError(f"SEARCH_LANGUAGE={language!r} is not a text search configuration of this database")
    # config.py allows only an identifier, so the literal below needs no escaping beyond the check.
    op.execute(
        sa.text(
            "CREATE OR REPLACE FUNCTION cleaning_search_config() RETURNS regconfig"
            f" LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '{language}'::regconfig $$"
        )
    )
    op.execute(
        sa.text(f"ALTER TABLE cleanings ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({SEARCH_VECTOR}) STORED")
    )
    with op.get_context().autocommit_block():
        for name, definition in INDEXES.items():
            op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            op.execute(sa.text(f"CREATE INDEX CONCURRENTLY {name} {definition}"))


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
    op.drop_column("cleanings", "search_vector")
    op.execute(sa.text("DROP FUNCTION IF EXISTS cleaning_search_config()"))
