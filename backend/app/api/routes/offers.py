from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from app.api.conditional import CONDITIONAL_RESPONSES, if_none_match, tagged_response
from app.api.dependencies.audit import Audit
from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.cleanings import NOT_FOUND as CLEANING_NOT_FOUND
from app.api.dependencies.cleanings import CleaningFromPath, cleaning_not_found
from app.api.dependencies.database import database_of
from app.api.dependencies.offers import (
    ALREADY_ACCEPTED,
    CANNOT_LIST,
    CANNOT_VIEW,
    DUPLICATE_OFFER,
    NOT_ACCEPTED,
    NOT_CLEANING_OWNER,
    NOT_PENDING,
    NOT_RESCINDABLE,
    OFFER_NOT_FOUND,
    OWNER_LEFT,
    OfferFromPath,
    OffersRepo,
    OwnOffer,
    bad_request,
    check_offer_acceptance_permissions,
    check_offer_cancel_permissions,
    check_offer_create_permissions,
    check_offer_get_permissions,
    check_offer_rescind_permissions,
    forbidden,
    offer_not_found,
)
from app.api.dependencies.paging import DateTimeQuery, in_utc
from app.api.errors import error_responses
from app.db.errors import (
    CleaningAlreadyHasAcceptedOfferError,
    CleaningNotFoundError,
    CleaningOwnerLeftError,
    OfferAlreadyExistsError,
    OfferNotAcceptedError,
    OfferNotFoundError,
    OfferNotPendingError,
)
from app.db.repositories.base import MAX_ID
from app.db.repositories.offers import OffersRepository
from app.models.offer import OfferCreate, OfferInDB, OfferPublic, OfferStatus, OfferUpdate
from app.models.security_event import SecurityEventKind as Event

router = APIRouter()


def public(offer: OfferInDB) -> OfferPublic:
    return OfferPublic.model_validate(offer.model_dump())


def detail_of(offer: OfferInDB) -> str:
    return f"cleaning {offer.cleaning_id}, offer of user {offer.user_id}"


@router.post(
    "/",
    response_model=OfferPublic,
    name="offers:create-offer",
    summary="Offer to do a cleaning",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(check_offer_create_permissions)],
    responses=error_responses(400, 401, 404, 503, e400=DUPLICATE_OFFER, e404=CLEANING_NOT_FOUND),
)
async def create_offer(cleaning: CleaningFromPath, current_user: CurrentUser, offers_repo: OffersRepo) -> OfferPublic:
    """Offer to do someone else's cleaning job: a pending offer, one per user and job."""
    try:
        offer = await offers_repo.create_offer_for_cleaning(
            new_offer=OfferCreate(cleaning_id=cleaning.id, user_id=current_user.id)
        )
    except OfferAlreadyExistsError as exc:  # a second request raced the check
        raise bad_request(DUPLICATE_OFFER) from exc
    except CleaningNotFoundError as exc:
        raise cleaning_not_found() from exc
    except CleaningOwnerLeftError as exc:
        raise bad_request(OWNER_LEFT) from exc
    return public(offer)


@router.get(
    "/",
    response_model=list[OfferPublic],
    name="offers:list-offers-for-cleaning",
    summary="List the offers for my cleaning",
    responses={
        **error_responses(401, 403, 404, 503, e403=CANNOT_LIST, e404=CLEANING_NOT_FOUND),
        **CONDITIONAL_RESPONSES,
    },
)
async def list_offers_for_cleaning(
    # As CleaningFromPath takes it: a positive integer (422), checked after the caller (401).
    cleaning_id: Annotated[int, Path(ge=1)],
    current_user: CurrentUser,
    request: Request,
    limit: Annotated[int | None, Query(ge=1, le=100, description="At most this many offers (default: all).")] = None,
    after_created_at: Annotated[
        DateTimeQuery | None,
        Query(description="The `created_at` of the last offer of the page before (UTC if it has no time zone)."),
    ] = None,
    after_user_id: Annotated[
        int, Query(ge=0, le=MAX_ID, description="The `user_id` of the last offer of the page before.")
    ] = 0,
) -> Response:
    """Every offer for the cleaning, oldest first, each with the user who made it (the cleaning's
    owner only). Page with `limit`, and the last offer's `created_at` and `user_id` as the cursor.
    With an `ETag`: send it back in `If-None-Match` for a 304 while the page is the same."""
    after = (in_utc(after_created_at), after_user_id) if after_created_at is not None else None
    # The permission check (the tutorial's check_offer_list_permissions: 404, then 403 for anyone
    # but the owner) and the page are one statement: one round trip on a hot route.
    listed = await OffersRepository(database_of(request)).list_tagged_offers_for_cleaning(
        cleaning_id=cleaning_id, reader=current_user, limit=limit, after=after, if_none_match=if_none_match(request)
    )
    if listed is None:
        raise cleaning_not_found()
    owner, page = listed
    if owner != current_user.id:
        raise forbidden(CANNOT_LIST)
    return tagged_response(page)


@router.get(
    "/{username}/",
    response_model=OfferPublic,
    name="offers:get-offer-from-user",
    summary="Get a user's offer",
    dependencies=[Depends(check_offer_get_permissions)],
    responses=error_responses(401, 403, 404, 503, e403=CANNOT_VIEW, e404=OFFER_NOT_FOUND),
)
async def get_offer_from_user(offer: OfferFromPath) -> OfferPublic:
    """The offer the user made for the cleaning: seen by the cleaning's owner and by that user."""
    return public(offer)


@router.put(
    "/{username}/",
    response_model=OfferPublic,
    name="offers:accept-offer-from-user",
    summary="Accept an offer",
    dependencies=[Depends(check_offer_acceptance_permissions)],
    responses=error_responses(400, 401, 403, 404, 503, e400=ALREADY_ACCEPTED, e403=NOT_CLEANING_OWNER),
)
async def accept_offer(offer: OfferFromPath, offers_repo: OffersRepo, audit: Audit) -> OfferPublic:
    """Accept a pending offer for your cleaning: every other pending offer is rejected at once."""
    try:
        accepted = await offers_repo.accept_offer(offer=offer, offer_update=OfferUpdate(status=OfferStatus.accepted))
    except OfferNotPendingError as exc:
        raise bad_request(NOT_PENDING) from exc
    except CleaningAlreadyHasAcceptedOfferError as exc:
        raise bad_request(ALREADY_ACCEPTED) from exc
    except (OfferNotFoundError, CleaningNotFoundError) as exc:
        raise offer_not_found() from exc
    await audit.record(Event.offer_accepted, detail=detail_of(accepted))
    return public(accepted)


@router.put(
    "/",
    response_model=OfferPublic,
    name="offers:cancel-offer-from-user",
    summary="Cancel my accepted offer",
    dependencies=[Depends(check_offer_cancel_permissions)],
    responses=error_responses(400, 401, 404, 503, e400=NOT_ACCEPTED, e404=OFFER_NOT_FOUND),
)
async def cancel_offer(offer: OwnOffer, offers_repo: OffersRepo, audit: Audit) -> OfferPublic:
    """Back out of a job after your offer was accepted: the offers that were rejected are pending again."""
    try:
        cancelled = await offers_repo.cancel_offer(offer=offer, offer_update=OfferUpdate(status=OfferStatus.cancelled))
    except OfferNotAcceptedError as exc:
        raise bad_request(NOT_ACCEPTED) from exc
    except (OfferNotFoundError, CleaningNotFoundError) as exc:
        raise offer_not_found() from exc
    await audit.record(Event.offer_cancelled, detail=detail_of(cancelled))
    return public(cancelled)


@router.delete(
    "/",
    response_model=int,
    name="offers:rescind-offer-from-user",
    summary="Withdraw my pending offer",
    dependencies=[Depends(check_offer_rescind_permissions)],
    responses=error_responses(400, 401, 404, 503, e400=NOT_RESCINDABLE, e404=OFFER_NOT_FOUND),
)
async def rescind_offer(offer: OwnOffer, offers_repo: OffersRepo, audit: Audit) -> int:
    """Withdraw your offer while it is pending (it is deleted); the answer is the cleaning's id."""
    try:
        cleaning_id = await offers_repo.rescind_offer(offer=offer)
    except OfferNotPendingError as exc:
        raise bad_request(NOT_RESCINDABLE) from exc
    except OfferNotFoundError as exc:
        raise offer_not_found() from exc
    await audit.record(Event.offer_rescinded, detail=detail_of(offer))
    return cleaning_id
