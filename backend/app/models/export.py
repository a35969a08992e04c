"""The export of an account (GET /api/users/me/export/): everything Phresh holds about its user, as
one JSON document. No password hash or salt, no token or token hash, no second-factor secret or
recovery code: each model lists its fields, so nothing comes along unless it is named here."""

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, field_validator

from app.models.cleaning import CleaningType
from app.models.core import CoreModel

EXPORT_FORMAT = "phresh-account-export/1"


class ExportedAccount(CoreModel):
    id: int
    username: str
    email: str
    email_verified: bool
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime


class ExportedProfile(CoreModel):
    full_name: str | None
    phone_number: str | None
    bio: str | None
    image: str | None
    created_at: datetime
    updated_at: datetime


class ExportedCleaning(CoreModel):
    id: int
    name: str
    description: str | None
    price: float
    cleaning_type: CleaningType
    created_at: datetime
    updated_at: datetime


class ExportedOffer(CoreModel):
    """An offer: one the user made (`user_id` is theirs), or one made on their cleaning."""

    cleaning_id: int
    cleaning_name: str
    user_id: int
    username: str = Field(description="The offering user's username (a deleted user's as `deleted-user.<id>`).")
    status: str
    created_at: datetime
    updated_at: datetime


class ExportedEvaluation(CoreModel):
    """An evaluation the user wrote (of a cleaner of their cleaning), or one they received."""

    cleaning_id: int
    cleaning_name: str
    cleaner_id: int
    cleaner_username: str
    no_show: bool
    headline: str | None
    comment: str | None
    professionalism: int | None
    completeness: int | None
    efficiency: int | None
    overall_rating: int
    created_at: datetime
    updated_at: datetime


class ExportedSession(CoreModel):
    """A session, live or ended (ended ones are kept a week after they end)."""

    id: UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    client_address: str | None
    user_agent: str | None


class ExportedSecurityEvent(CoreModel):
    created_at: datetime
    kind: str
    client_address: str | None
    detail: str | None
    request_id: str | None


class ExportedMail(CoreModel):
    """A message sent (or to be sent) to the account's address; never the link or token it carried."""

    kind: str
    recipient: str
    created_at: datetime
    outcome: str | None = Field(description="sent, skipped, failed or expired; null while it waits to be sent.")
    finished_at: datetime | None
    details: dict[str, str] | None = Field(default=None, description="What a notice says (no token).")

    @field_validator("details", mode="before")
    @classmethod
    def decoded(cls, value: object) -> object:
        # jsonb comes from the driver as its text.
        return json.loads(value) if isinstance(value, str) else value


class ExportedSecondFactor(CoreModel):
    """Whether the second factor is on; never its secret or the recovery codes."""

    enabled: bool
    created_at: datetime | None = None
    enabled_at: datetime | None = None
    recovery_codes_left: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | None) -> "ExportedSecondFactor":
        if row is None:
            return cls(enabled=False)
        return cls(enabled=row["enabled_at"] is not None, **row)


class AccountExport(CoreModel):
    """Everything Phresh holds about me: my account, profile, cleanings, the offers I made and
    received, the evaluations I gave and received, my sessions, the audit trail's events about me,
    the mail sent to me, and whether my second factor is on."""

    format: Literal["phresh-account-export/1"]
    exported_at: datetime
    account: ExportedAccount
    profile: ExportedProfile | None
    cleanings: list[ExportedCleaning]
    offers_made: list[ExportedOffer]
    offers_received: list[ExportedOffer]
    evaluations_given: list[ExportedEvaluation]
    evaluations_received: list[ExportedEvaluation]
    sessions: list[ExportedSession]
    security_events: list[ExportedSecurityEvent]
    mail: list[ExportedMail]
    second_factor: ExportedSecondFactor
