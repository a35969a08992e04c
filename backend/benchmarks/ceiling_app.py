"""The app under benchmark, plus a ceiling route that exists only here, never in the public API.

GET /bench/ceiling/ is the least a request through this stack can cost: FastAPI's routing and
JSON response, one connection taken from the same pool, `SELECT 1`. Authenticated routes are
compared to it in the same run.
"""

from typing import Annotated

from databases import Database
from fastapi import Depends

from app.api.dependencies.database import get_database
from app.api.server import get_application

app = get_application()


@app.get("/bench/ceiling/", include_in_schema=False)
async def ceiling(db: Annotated[Database, Depends(get_database)]) -> dict[str, int]:
    return {"one": int(await db.fetch_val("SELECT 1"))}
