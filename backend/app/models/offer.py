"""Offers (Part 11): a user offers to do a cleaning job; its owner accepts one of them."""

from enum import StrEnum

from app.models.cleaning import CleaningPublic
from app.models.core import CoreModel, DateTimeModelMixin
from app.models.user import UserPublic


class OfferStatus(StrEnum):
    accepted = "accepted"
    rejected = "rejected"
    pending = "pending"
    cancelled = "cancelled"
    completed = "completed"  # accepted, and the work evaluated (Part 12)


class OfferBase(CoreModel):
    user_id: int | None = None
    cleaning_id: int | None = None
    status: OfferStatus | None = OfferStatus.pending


class OfferCreate(OfferBase):
    user_id: int
    cleaning_id: int


class OfferUpdate(CoreModel):
    status: OfferStatus


class OfferInDB(DateTimeModelMixin, OfferBase):
    """An offer is named by its user and its cleaning: there is no offer id."""

    user_id: int
    cleaning_id: int


class OfferPublic(OfferInDB):
    # The offering user, embedded where offers are listed for the cleaning's owner (Part 20).
    user: UserPublic | None = None
    cleaning: CleaningPublic | None = None
