from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.database import database_of, get_repository
from app.db.repositories.cleanings import CleaningsRepository
from app.models.cleaning import AnyCleaning, CleaningPublic
from app.models.user import AnyUser, UserPublic

CleaningsRepo = Annotated[CleaningsRepository, Depends(get_repository(CleaningsRepository))]

NOT_FOUND = "No cleaning found with that id."
NOT_OWNER = "Users are only able to modify cleanings that they created."


def cleaning_not_found() -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)


async def get_cleaning_by_id_from_path(
    # A cleaning id is a positive integer: anything else is malformed (422), not missing (404).
    # The current user resolves first, so a request without a valid token is a 401 whatever the id.
    cleaning_id: Annotated[int, Path(ge=1)],
    current_user: CurrentUser,
    request: Request,
) -> CleaningPublic:
    """The cleaning the path names, with its owner embedded (any logged-in user may read it)."""
    # The repository is made here rather than by a dependency of its own: each dependency FastAPI
    # solves costs about 20 µs, and this one is under most of the marketplace's routes.
    cleanings_repo = CleaningsRepository(database_of(request))
    cleaning = await cleanings_repo.get_cleaning_by_id(id=cleaning_id, requesting_user=current_user)
    if cleaning is None:
        raise cleaning_not_found()
    return cleaning


CleaningFromPath = Annotated[CleaningPublic, Depends(get_cleaning_by_id_from_path)]


def user_owns_cleaning(*, user: AnyUser, cleaning: AnyCleaning) -> bool:
    """Whether the user owns the cleaning, whether its owner is an id or an embedded user."""
    owner = cleaning.owner
    owner_id = owner.id if isinstance(owner, UserPublic) else owner
    return owner_id == user.id


async def check_cleaning_modification_permissions(
    current_user: CurrentUser,
    cleaning: CleaningFromPath,
) -> CleaningPublic:
    """The cleaning, if the caller may change it: its owner, or a superuser (moderation)."""
    if not user_owns_cleaning(user=current_user, cleaning=cleaning) and not current_user.is_superuser:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=NOT_OWNER)
    return cleaning


ModifiableCleaning = Annotated[CleaningPublic, Depends(check_cleaning_modification_permissions)]
