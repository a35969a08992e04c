"""Offers from the path, and who may do what with them. Each check is a route-level dependency,
as in the tutorial, so that the errors come in its order: who is asking (401), the cleaning
(422/404), the user named in the path (422/404), the offer (404), the permission (403), the
offer's state (400). The repository checks the state again under the cleaning's lock: these
checks give the clear answer, the lock settles a race. (The list of a cleaning's offers checks
its permission in the statement that reads the page: see routes/offers.py.)"""

from typing import Annotated

from fastapi import Depends, HTTPException, status

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.cleanings import CleaningFromPath, user_owns_cleaning
from app.api.dependencies.database import get_repository
from app.api.dependencies.users import UserFromPath
from app.db.repositories.offers import OffersRepository
from app.models.cleaning import AnyCleaning
from app.models.offer import OfferInDB, OfferPublic, OfferStatus
from app.models.user import AnyUser

OffersRepo = Annotated[OffersRepository, Depends(get_repository(OffersRepository))]

OFFER_NOT_FOUND = "Offer not found."
OWN_CLEANING = "Users are unable to create offers for cleaning jobs they own."
DUPLICATE_OFFER = "Users aren't allowed create more than one offer for a cleaning job."
OWNER_LEFT = "The owner of this cleaning has left Phresh: nobody can accept an offer on it."
CANNOT_LIST = "Unable to access offers."
CANNOT_VIEW = "Unable to access offer."
NOT_CLEANING_OWNER = "Only the owner of the cleaning may accept offers."
NOT_PENDING = "Can only accept offers that are currently pending."
ALREADY_ACCEPTED = "That cleaning job already has an accepted offer."
NOT_ACCEPTED = "Can only cancel offers that have been accepted."
NOT_RESCINDABLE = "Can only rescind currently pending offers."


def bad_request(detail: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=detail)


def forbidden(detail: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=detail)


def offer_not_found() -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=OFFER_NOT_FOUND)


async def get_offer_for_cleaning_from_user(
    *, user: AnyUser, cleaning: AnyCleaning, offers_repo: OffersRepository
) -> OfferInDB:
    offer = await offers_repo.get_offer_for_cleaning_from_user(cleaning=cleaning, user=user)
    if offer is None:
        raise offer_not_found()
    return offer


async def get_offer_for_cleaning_from_user_by_path(
    user: UserFromPath, cleaning: CleaningFromPath, offers_repo: OffersRepo
) -> OfferInDB:
    """The offer the user named in the path made for the cleaning in the path."""
    return await get_offer_for_cleaning_from_user(user=user, cleaning=cleaning, offers_repo=offers_repo)


OfferFromPath = Annotated[OfferInDB, Depends(get_offer_for_cleaning_from_user_by_path)]


async def list_offers_for_cleaning_by_id_from_path(
    cleaning: CleaningFromPath, offers_repo: OffersRepo
) -> list[OfferPublic]:
    return await offers_repo.list_offers_for_cleaning(cleaning=cleaning)


async def get_offer_for_cleaning_from_current_user(
    current_user: CurrentUser, cleaning: CleaningFromPath, offers_repo: OffersRepo
) -> OfferInDB:
    """The caller's own offer for the cleaning in the path."""
    return await get_offer_for_cleaning_from_user(user=current_user, cleaning=cleaning, offers_repo=offers_repo)


OwnOffer = Annotated[OfferInDB, Depends(get_offer_for_cleaning_from_current_user)]


async def check_offer_create_permissions(
    current_user: CurrentUser, cleaning: CleaningFromPath, offers_repo: OffersRepo
) -> None:
    if user_owns_cleaning(user=current_user, cleaning=cleaning):
        raise bad_request(OWN_CLEANING)
    if await offers_repo.get_offer_for_cleaning_from_user(cleaning=cleaning, user=current_user):
        raise bad_request(DUPLICATE_OFFER)


async def check_offer_get_permissions(
    current_user: CurrentUser, cleaning: CleaningFromPath, offer: OfferFromPath
) -> None:
    """An offer is seen by the cleaning's owner and by the user who made it."""
    if not user_owns_cleaning(user=current_user, cleaning=cleaning) and offer.user_id != current_user.id:
        raise forbidden(CANNOT_VIEW)


async def check_offer_acceptance_permissions(
    current_user: CurrentUser,
    cleaning: CleaningFromPath,
    offer: OfferFromPath,
    existing_offers: Annotated[list[OfferPublic], Depends(list_offers_for_cleaning_by_id_from_path)],
) -> None:
    if not user_owns_cleaning(user=current_user, cleaning=cleaning):
        raise forbidden(NOT_CLEANING_OWNER)
    if offer.status != OfferStatus.pending:
        raise bad_request(NOT_PENDING)
    if any(existing.status in (OfferStatus.accepted, OfferStatus.completed) for existing in existing_offers):
        raise bad_request(ALREADY_ACCEPTED)


async def check_offer_cancel_permissions(offer: OwnOffer) -> None:
    if offer.status != OfferStatus.accepted:
        raise bad_request(NOT_ACCEPTED)


async def check_offer_rescind_permissions(offer: OwnOffer) -> None:
    if offer.status != OfferStatus.pending:
        raise bad_request(NOT_RESCINDABLE)
