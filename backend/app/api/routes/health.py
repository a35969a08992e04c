from typing import Annotated

from alembic.script import ScriptDirectory
from databases import Database
from fastapi import APIRouter, Depends, status
from fastapi.responses import JSONResponse

from app.api.dependencies.database import get_database
from app.core.config import BACKEND_DIR
from app.db.errors import DATABASE_UNAVAILABLE_ERRORS
from app.models.core import CoreModel

router = APIRouter()

# The newest migration this code knows, read once from the migration scripts.
MIGRATIONS_HEAD = ScriptDirectory(str(BACKEND_DIR / "app" / "db" / "migrations")).get_current_head()


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
    responses={503: {"model": Readiness, "description": "The database is unreachable, or not migrated to head."}},
)
async def ready(db: Annotated[Database, Depends(get_database)]) -> Readiness | JSONResponse:
    """The database answers and its schema is at this code's newest migration: for readiness probes."""
    try:
        revision = await db.fetch_val("SELECT version_num FROM alembic_version")
    except DATABASE_UNAVAILABLE_ERRORS:
        readiness = Readiness(status="unavailable", database="unreachable", migrations="unknown")
        return JSONResponse(readiness.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    if revision != MIGRATIONS_HEAD:
        readiness = Readiness(status="unavailable", database="ok", migrations=f"{revision}, not {MIGRATIONS_HEAD}")
        return JSONResponse(readiness.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Readiness(status="ready", database="ok", migrations=str(revision))
