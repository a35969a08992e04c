from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, status

from app.api.dependencies.database import get_repository
from app.db.errors import InvalidCleaningTypeError
from app.db.repositories.cleanings import CleaningsRepository
from app.models.cleaning import CleaningCreate, CleaningPublic, CleaningUpdate

router = APIRouter()

CleaningsRepo = Annotated[CleaningsRepository, Depends(get_repository(CleaningsRepository))]
# Updates and deletes name an existing row, so a non-positive id is malformed (422), not missing.
PositiveId = Annotated[int, Path(ge=1)]

NOT_FOUND = "No cleaning found with that id."


def _not_found() -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)


@router.get("/", response_model=list[CleaningPublic], name="cleanings:get-all-cleanings")
async def get_all_cleanings(cleanings_repo: CleaningsRepo) -> list[CleaningPublic]:
    cleanings = await cleanings_repo.get_all_cleanings()
    return [CleaningPublic.model_validate(cleaning.model_dump()) for cleaning in cleanings]


@router.post(
    "/",
    response_model=CleaningPublic,
    name="cleanings:create-cleaning",
    status_code=status.HTTP_201_CREATED,
)
async def create_new_cleaning(
    new_cleaning: Annotated[CleaningCreate, Body(embed=True)],
    cleanings_repo: CleaningsRepo,
) -> CleaningPublic:
    created = await cleanings_repo.create_cleaning(new_cleaning=new_cleaning)
    return CleaningPublic.model_validate(created.model_dump())


@router.get("/{id}/", response_model=CleaningPublic, name="cleanings:get-cleaning-by-id")
async def get_cleaning_by_id(id: int, cleanings_repo: CleaningsRepo) -> CleaningPublic:
    cleaning = await cleanings_repo.get_cleaning_by_id(id=id)
    if cleaning is None:
        raise _not_found()
    return CleaningPublic.model_validate(cleaning.model_dump())


@router.put("/{id}/", response_model=CleaningPublic, name="cleanings:update-cleaning-by-id")
async def update_cleaning_by_id(
    id: PositiveId,
    cleaning_update: Annotated[CleaningUpdate, Body(embed=True)],
    cleanings_repo: CleaningsRepo,
) -> CleaningPublic:
    try:
        updated = await cleanings_repo.update_cleaning(id=id, cleaning_update=cleaning_update)
    except InvalidCleaningTypeError as exc:
        raise HTTPException(
            status_code=status.HTTP_400_BAD_REQUEST,
            detail="Invalid cleaning type. Cannot be None.",
        ) from exc
    if updated is None:
        raise _not_found()
    return CleaningPublic.model_validate(updated.model_dump())


@router.delete("/{id}/", response_model=int, name="cleanings:delete-cleaning-by-id")
async def delete_cleaning_by_id(id: PositiveId, cleanings_repo: CleaningsRepo) -> int:
    deleted_id = await cleanings_repo.delete_cleaning_by_id(id=id)
    if deleted_id is None:
        raise _not_found()
    return deleted_id
