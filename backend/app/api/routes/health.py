from typing import Annotated

from alembic.script import ScriptDirectory
from fastapi import APIRouter, Depends, status
from fastapi.responses import JSONResponse

from app.api.dependencies.database import get_repository
from app.core.config import BACKEND_DIR
from app.db.errors import DATABASE_UNAVAILABLE_ERRORS
from app.db.repositories.schema import SchemaRepository
from app.models.core import CoreModel

router = APIRouter()

# The migrations this code knows and the newest of them, read once from the migration scripts.
_SCRIPTS = ScriptDirectory(str(BACKEND_DIR / "app" / "db" / "migrations"))
MIGRATIONS_HEAD = str(_SCRIPTS.get_current_head())
KNOWN_REVISIONS = frozenset(script.revision for script in _SCRIPTS.walk_revisions())


class Health(CoreModel):
    status: str


class Readiness(CoreModel):
    status: str
    database: str
    migrations: str


@router.get("/", response_model=Health, name="health:alive", summary="Alive?")
async def alive() -> Health:
    """The process is up and answering (no database involved): for liveness probes."""
    return Health(status="ok")


@router.get(
    "/ready/",
    response_model=Readiness,
    name="health:ready",
    summary="Ready to serve?",
    responses={
        503: {
            "model": Readiness,
            "description": "The database is unreachable, behind this code's newest migration, or on another history.",
        }
    },
)
async def ready(
    schema: Annotated[SchemaRepository, Depends(get_repository(SchemaRepository))],
) -> Readiness | JSONResponse:
    """The database answers and its schema is at this code's newest migration or a later one of the
    same history (a newer release migrated it: every revision keeps the release before it working,
    docs/deployment.md): for readiness probes."""
    try:
        revision = await schema.current_revision()
        if revision == MIGRATIONS_HEAD:
            return Readiness(status="ready", database="ok", migrations=revision)
        if revision is None:
            return not_ready(f"not migrated: run the migrations to {MIGRATIONS_HEAD}")
        if revision in KNOWN_REVISIONS:
            return not_ready(f"{revision}, behind this code's {MIGRATIONS_HEAD}: run the migrations")
        # A revision this code has never seen: a later release's, if ours is in its history.
        if await schema.has_applied(revision=MIGRATIONS_HEAD):
            return Readiness(
                status="ready", database="ok", migrations=f"{revision}, after this code's {MIGRATIONS_HEAD}"
            )
        return not_ready(f"{revision}, not a later revision of this code's {MIGRATIONS_HEAD}")
    except DATABASE_UNAVAILABLE_ERRORS:
        readiness = Readiness(status="unavailable", database="unreachable", migrations="unknown")
        return JSONResponse(readiness.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


def not_ready(migrations: str) -> JSONResponse:
    readiness = Readiness(status="unavailable", database="ok", migrations=migrations)
    return JSONResponse(readiness.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
