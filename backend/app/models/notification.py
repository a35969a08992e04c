"""Mail about offers (issue 24): which kinds a user gets, and the one-click unsubscribe."""

from enum import StrEnum

from pydantic import ConfigDict, Field

from app.models.core import CoreModel, FormBool


class NotificationKind(StrEnum):
    """The mails a user may turn off, each on by default (docs/api.md, "Notifications")."""

    offer_received = "offer_received"  # to a cleaning's owner: the offers that came in
    offer_accepted = "offer_accepted"  # to a cleaner: their offer was accepted
    offer_rejected = "offer_rejected"  # to a cleaner: another offer was accepted
    offer_cancelled = "offer_cancelled"  # to a cleaning's owner: the accepted cleaner backed out


# What each kind is, in words: for the unsubscribe answers and the mails' footers.
KIND_DESCRIPTIONS = {
    NotificationKind.offer_received: "new offers on your cleanings",
    NotificationKind.offer_accepted: "your offers being accepted",
    NotificationKind.offer_rejected: "your offers being rejected",
    NotificationKind.offer_cancelled: "cleaners backing out of the offers you accepted",
}

# Every kind is on unless its user turned it off: see NotificationPreferences.
DEFAULT_ENABLED = True


class NotificationPreferences(CoreModel):
    """Which mails about offers I get. Each is on until turned off: these mails are about my own
    cleanings and offers, the news a user would otherwise have to poll for, and each one carries a
    one-click unsubscribe."""

    offer_received: bool = Field(
        default=DEFAULT_ENABLED,
        description="New offers on my cleanings (at most one mail per cleaning per quarter hour, listing them).",
    )
    offer_accepted: bool = Field(default=DEFAULT_ENABLED, description="An offer of mine was accepted.")
    offer_rejected: bool = Field(default=DEFAULT_ENABLED, description="An offer of mine was rejected.")
    offer_cancelled: bool = Field(default=DEFAULT_ENABLED, description="The cleaner whose offer I accepted backed out.")


class NotificationPreferencesUpdate(CoreModel):
    """The kinds to turn on (`true`) or off (`false`); a kind left out (or null) stays as it is."""

    model_config = ConfigDict(extra="forbid")  # a misspelt kind is a 422, not a silent no-op

    offer_received: FormBool | None = None
    offer_accepted: FormBool | None = None
    offer_rejected: FormBool | None = None
    offer_cancelled: FormBool | None = None

    def changes(self) -> dict[NotificationKind, bool]:
        return {NotificationKind(name): value for name, value in self.model_dump().items() if value is not None}


class UnsubscribeLink(CoreModel):
    """What an unsubscribe link is for, and whether that mail is on now."""

    username: str
    kind: NotificationKind
    subscribed: bool
    detail: str
