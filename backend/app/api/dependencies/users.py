from typing import Annotated

from fastapi import Depends, HTTPException, Path, status

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.database import get_repository
from app.db.repositories.users import UsersRepository
from app.models.user import UserInDB, Username

UsersRepo = Annotated[UsersRepository, Depends(get_repository(UsersRepository))]

USER_NOT_FOUND_BY_USERNAME = "No user found with that username."


async def get_user_by_username_from_path(
    username: Annotated[Username, Path()],
    current_user: CurrentUser,
    users_repo: UsersRepo,
) -> UserInDB:
    """The user the path names (usernames match whatever their case); 404 if there is none."""
    user = await users_repo.get_user_by_username(username=username, populate=False)
    if user is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=USER_NOT_FOUND_BY_USERNAME)
    return user


UserFromPath = Annotated[UserInDB, Depends(get_user_by_username_from_path)]
