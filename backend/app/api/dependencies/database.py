from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from databases import Database
from fastapi import Request

from app.db.repositories.base import BaseRepository

RepositoryT = TypeVar("RepositoryT", bound=BaseRepository)


# Dependencies are `async def` even when they await nothing: FastAPI runs a plain `def` dependency
# in a worker thread, a thread hop per request per dependency.
def database_of(request: Request) -> Database:
    """The app's pool, as a plain call: what a dependency reads when it needs the database but
    should not cost FastAPI another dependency to solve (about 20 µs each, docs/performance.md)."""
    database: Database = request.app.state._db
    return database


async def get_database(request: Request) -> Database:
    return database_of(request)


def get_repository(repo_type: type[RepositoryT]) -> Callable[[Request], Coroutine[Any, Any, RepositoryT]]:
    # The pool is read by a plain call, not through get_database: a repository is on most routes.
    async def get_repo(request: Request) -> RepositoryT:
        return repo_type(database_of(request))

    return get_repo
