from typing import Annotated

from fastapi import Depends, HTTPException, status

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.cleanings import CleaningFromPath, user_owns_cleaning
from app.api.dependencies.database import get_repository
from app.api.dependencies.offers import OfferFromPath, bad_request, forbidden
from app.api.dependencies.users import UserFromPath
from app.db.repositories.evaluations import EvaluationsRepository
from app.models.evaluation import EvaluationInDB
from app.models.offer import OfferStatus

EvaluationsRepo = Annotated[EvaluationsRepository, Depends(get_repository(EvaluationsRepository))]

NOT_OWNER = "Users are unable to leave evaluations for cleaning jobs they do not own."
NOT_ACCEPTED = "Users are unable to leave multiple evaluations jobs they did not accept."
EVALUATION_NOT_FOUND = "No evaluation found for that cleaning."


async def check_evaluation_create_permissions(
    current_user: CurrentUser,
    cleaning: CleaningFromPath,
    cleaner: UserFromPath,
    offer: OfferFromPath,
) -> None:
    """Only the cleaning's owner evaluates, and only the cleaner whose offer they accepted, once
    (evaluating marks the offer completed)."""
    if not user_owns_cleaning(user=current_user, cleaning=cleaning):
        raise forbidden(NOT_OWNER)
    if offer.status != OfferStatus.accepted:
        raise bad_request(NOT_ACCEPTED)


async def list_evaluations_for_cleaner_from_path(
    cleaner: UserFromPath, evals_repo: EvaluationsRepo
) -> list[EvaluationInDB]:
    return await evals_repo.list_evaluations_for_cleaner(cleaner=cleaner)


async def get_cleaner_evaluation_for_cleaning_from_path(
    cleaning: CleaningFromPath, cleaner: UserFromPath, evals_repo: EvaluationsRepo
) -> EvaluationInDB:
    evaluation = await evals_repo.get_cleaner_evaluation_for_cleaning(cleaning=cleaning, cleaner=cleaner)
    if evaluation is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=EVALUATION_NOT_FOUND)
    return evaluation
