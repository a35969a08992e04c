from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from databases import Database
from fastapi import Depends, Request

from app.db.repositories.base import BaseRepository

RepositoryT = TypeVar("RepositoryT", bound=BaseRepository)


# Dependencies are `async def` even when they await nothing: FastAPI runs a plain `def` dependency
# in a worker thread, a thread hop per request per dependency.
async def get_database(request: Request) -> Database:
    database: Database = request.app.state._db
    return database


def get_repository(repo_type: type[RepositoryT]) -> Callable[[Database], Coroutine[Any, Any, RepositoryT]]:
    async def get_repo(db: Annotated[Database, Depends(get_database)]) -> RepositoryT:
        return repo_type(db)

    return get_repo
