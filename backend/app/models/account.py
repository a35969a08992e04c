"""Leaving Phresh: what confirms an account's deletion, and what the deletion did."""

from typing import Annotated

from pydantic import Field, StringConstraints

from app.models.core import CoreModel, Text
from app.models.user import MAX_PASSWORD_LENGTH

# A six-digit code from an authenticator app, or a recovery code; bounded before it is looked at.
SecondFactorCode = Annotated[Text, StringConstraints(min_length=1, max_length=64)]


class AccountDeletion(CoreModel):
    """The password proves it is the user asking (as for a password change); `code`, from the
    authenticator app or a recovery code, is required too when the second factor is on."""

    password: Annotated[Text, StringConstraints(max_length=MAX_PASSWORD_LENGTH)]
    code: SecondFactorCode | None = None


class AccountDeleted(CoreModel):
    """What the deletion did with what the account touched (kept in the audit trail's event as counts)."""

    cleanings_deleted: int = Field(description="Cleanings without an accepted or completed offer, with their offers.")
    cleanings_kept: int = Field(
        description="Cleanings with an accepted or completed offer: they stay for the cleaner, owned by a deleted user."
    )
    offers_withdrawn: int = Field(description="Pending offers on others' cleanings: deleted.")
    offers_backed_out: int = Field(
        description="Accepted offers on others' cleanings: cancelled, and the cleaning's rejected offers pending again."
    )
    offers_kept: int = Field(
        description="Offers that stay in their cleaning's history (rejected, cancelled, completed), by a deleted user."
    )
    evaluations_received_deleted: int = Field(description="The account's statistics as a cleaner.")
    sessions_ended: int

    def summary(self) -> str:
        """The counts, for the audit trail: no name, no address."""
        return ", ".join(f"{name} {value}" for name, value in self.model_dump().items())
