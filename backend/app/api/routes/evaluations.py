from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response, status
from fastapi.responses import JSONResponse

from app.api.dependencies.audit import Audit
from app.api.dependencies.cleanings import CleaningFromPath
from app.api.dependencies.evaluations import (
    EVALUATION_NOT_FOUND,
    NOT_ACCEPTED,
    NOT_OWNER,
    EvaluationsRepo,
    check_evaluation_create_permissions,
    get_cleaner_evaluation_for_cleaning_from_path,
    list_evaluations_for_cleaner_from_path,
)
from app.api.dependencies.offers import bad_request
from app.api.dependencies.users import USER_NOT_FOUND_BY_USERNAME, UserFromPath
from app.api.errors import error_responses
from app.api.responses import list_response
from app.db.errors import OfferNotAcceptedError
from app.models.evaluation import EvaluationAggregate, EvaluationCreate, EvaluationInDB, EvaluationPublic
from app.models.security_event import SecurityEventKind as Event

router = APIRouter()


def public(evaluation: EvaluationInDB) -> EvaluationPublic:
    return EvaluationPublic.model_validate(evaluation.model_dump())


@router.post("/stats/", include_in_schema=False)
async def stats_are_read_only() -> JSONResponse:
    """Without this, POST .../stats/ would reach the route below with "stats" as a cleaning id and
    answer 422; the stats can only be read."""
    return JSONResponse(
        status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
        content={"detail": "Method Not Allowed"},
        headers={"Allow": "GET"},
    )


@router.post(
    "/{cleaning_id}/",
    response_model=EvaluationPublic,
    name="evaluations:create-evaluation-for-cleaner",
    summary="Evaluate a cleaner",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(check_evaluation_create_permissions)],
    responses=error_responses(400, 401, 403, 404, 413, 503, e400=NOT_ACCEPTED, e403=NOT_OWNER),
)
async def create_evaluation_for_cleaner(
    evaluation_create: Annotated[EvaluationCreate, Body(embed=True)],
    cleaning: CleaningFromPath,
    cleaner: UserFromPath,
    evals_repo: EvaluationsRepo,
    audit: Audit,
) -> EvaluationPublic:
    """Rate the cleaner whose offer you accepted for your cleaning (0 to 5; `overall_rating` is
    required). Their offer becomes `completed`: one evaluation per job."""
    try:
        evaluation = await evals_repo.create_evaluation_for_cleaner(
            evaluation_create=evaluation_create, cleaning=cleaning, cleaner=cleaner
        )
    except OfferNotAcceptedError as exc:  # evaluated, or cancelled, by a request that came first
        raise bad_request(NOT_ACCEPTED) from exc
    await audit.record(Event.evaluation_created, detail=f"cleaning {cleaning.id}, cleaner {cleaner.id}")
    return public(evaluation)


@router.get(
    "/",
    response_model=list[EvaluationPublic],
    name="evaluations:list-evaluations-for-cleaner",
    summary="List a cleaner's evaluations",
    responses=error_responses(401, 404, 503, e404=USER_NOT_FOUND_BY_USERNAME),
)
async def list_evaluations_for_cleaner(
    evaluations: Annotated[list[EvaluationInDB], Depends(list_evaluations_for_cleaner_from_path)],
) -> Response:
    """Every evaluation of the cleaner, oldest first (any logged-in user may read them)."""
    return list_response(EvaluationPublic, [public(evaluation) for evaluation in evaluations])


@router.get(
    "/stats/",
    response_model=EvaluationAggregate,
    name="evaluations:get-stats-for-cleaner",
    summary="Get a cleaner's rating stats",
    responses=error_responses(401, 404, 503, e404=USER_NOT_FOUND_BY_USERNAME),
)
async def get_stats_for_cleaner(cleaner: UserFromPath, evals_repo: EvaluationsRepo) -> EvaluationAggregate:
    """Averages, lowest and highest overall rating, a count per star and of no-shows. A cleaner
    with no evaluations yet gets zero counts and null averages."""
    return await evals_repo.get_cleaner_aggregates(cleaner=cleaner)


@router.get(
    "/{cleaning_id}/",
    response_model=EvaluationPublic,
    name="evaluations:get-evaluation-for-cleaner",
    summary="Get an evaluation of a cleaner",
    responses=error_responses(401, 404, 503, e404=EVALUATION_NOT_FOUND),
)
async def get_evaluation_for_cleaner(
    evaluation: Annotated[EvaluationInDB, Depends(get_cleaner_evaluation_for_cleaning_from_path)],
) -> EvaluationPublic:
    return public(evaluation)
