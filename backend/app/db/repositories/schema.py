"""The database's place in the migration history, for readiness (app/api/routes/health.py)."""

import asyncpg

from app.db.repositories.base import BaseRepository

CURRENT_REVISION_QUERY = "SELECT version_num FROM alembic_version;"

# schema_revisions holds every revision applied (migrations/env.py keeps it), since 1c9e5b7a3d20.
REVISION_APPLIED_QUERY = "SELECT EXISTS (SELECT 1 FROM schema_revisions WHERE revision = :revision);"


class SchemaRepository(BaseRepository):
    async def current_revision(self) -> str | None:
        """The newest revision applied; None for a database Alembic never migrated."""
        try:
            revision = await self.db.fetch_val(CURRENT_REVISION_QUERY)
        except asyncpg.UndefinedTableError:
            return None
        return str(revision) if revision is not None else None

    async def has_applied(self, *, revision: str) -> bool:
        """Whether `revision` is in this database's history (False where there is no record of it)."""
        try:
            return bool(await self.db.fetch_val(REVISION_APPLIED_QUERY, {"revision": revision}))
        except asyncpg.UndefinedTableError:
            return False
