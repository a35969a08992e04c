from collections.abc import Callable
from typing import Annotated, TypeVar

from databases import Database
from fastapi import Depends, Request

from app.db.repositories.base import BaseRepository

RepositoryT = TypeVar("RepositoryT", bound=BaseRepository)


def get_database(request: Request) -> Database:
    database: Database = request.app.state._db
    return database


def get_repository(repo_type: type[RepositoryT]) -> Callable[[Database], RepositoryT]:
    def get_repo(db: Annotated[Database, Depends(get_database)]) -> RepositoryT:
        return repo_type(db)

    return get_repo
