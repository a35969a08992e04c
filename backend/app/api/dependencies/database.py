from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from databases import Database
from fastapi import Request

from app.db.repositories.base import BaseRepository

RepositoryT = TypeVar("RepositoryT", bound=BaseRepository)


# Dependencies are `async def` even when they await nothing: FastAPI runs a plain `def` dependency
# in a worker thread, a thread hop per request per dependency.
async def get_database(request: Request) -> Database:
    database: Database = request.app.state._db
    return database


def get_repository(repo_type: type[RepositoryT]) -> Callable[[Request], Coroutine[Any, Any, RepositoryT]]:
    # The pool is read as get_database reads it, not through it: each dependency FastAPI solves
    # costs a request about 20 µs, and a repository is on most routes (docs/performance.md).
    async def get_repo(request: Request) -> RepositoryT:
        return repo_type(request.app.state._db)

    return get_repo
