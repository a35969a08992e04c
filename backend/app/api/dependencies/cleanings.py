from typing import Annotated

from fastapi import Depends, HTTPException, Path, status

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.database import get_repository
from app.db.repositories.cleanings import CleaningsRepository
from app.models.cleaning import CleaningInDB

CleaningsRepo = Annotated[CleaningsRepository, Depends(get_repository(CleaningsRepository))]

NOT_FOUND = "No cleaning found with that id."
NOT_OWNER = "Action forbidden. Users are only able to modify cleanings they own."


def cleaning_not_found() -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)


async def get_cleaning_by_id_from_path(
    # Updates and deletes name an existing row, so a non-positive id is malformed (422), not missing.
    cleaning_id: Annotated[int, Path(ge=1)],
    current_user: CurrentUser,
    cleanings_repo: CleaningsRepo,
) -> CleaningInDB:
    cleaning = await cleanings_repo.get_cleaning_by_id(id=cleaning_id)
    if cleaning is None:
        raise cleaning_not_found()
    return cleaning


async def check_cleaning_modification_permissions(
    current_user: CurrentUser,
    cleaning: Annotated[CleaningInDB, Depends(get_cleaning_by_id_from_path)],
) -> CleaningInDB:
    """The cleaning, if the caller may change it: its owner, or a superuser (moderation)."""
    if cleaning.owner != current_user.id and not current_user.is_superuser:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=NOT_OWNER)
    return cleaning


ModifiableCleaning = Annotated[CleaningInDB, Depends(check_cleaning_modification_permissions)]
