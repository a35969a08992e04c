from datetime import datetime
from enum import StrEnum

from app.models.core import CoreModel


class SecurityEventKind(StrEnum):
    registration = "registration"
    login_success = "login_success"
    login_failure = "login_failure"
    lockout = "lockout"
    password_change = "password_change"
    deactivation = "deactivation"
    reactivation = "reactivation"
    email_deduplicated = "email_deduplicated"
    # sessions: which one, in the detail
    session_refreshed = "session_refreshed"
    refresh_token_reused = "refresh_token_reused"
    logout = "logout"
    session_ended = "session_ended"
    sessions_ended_by_superuser = "sessions_ended_by_superuser"
    # mail: requests (the detail names the address) and uses of their tokens
    email_verification_requested = "email_verification_requested"
    email_verified = "email_verified"
    password_reset_requested = "password_reset_requested"
    password_reset = "password_reset"
    mail_token_rejected = "mail_token_rejected"
    # the marketplace: who did it is the event's user; which offer, its detail
    offer_accepted = "offer_accepted"
    offer_cancelled = "offer_cancelled"
    offer_rescinded = "offer_rescinded"
    evaluation_created = "evaluation_created"
    # leaving: the detail counts what the deletion did (no name, no address); taking one's data
    account_deleted = "account_deleted"
    account_exported = "account_exported"
    # the second factor: its enrolment, its codes at login, turning it off, a superuser's reset
    mfa_enrolment_started = "mfa_enrolment_started"
    mfa_enabled = "mfa_enabled"
    mfa_disabled = "mfa_disabled"
    mfa_reset = "mfa_reset"
    mfa_recovery_codes_renewed = "mfa_recovery_codes_renewed"
    mfa_code_requested = "mfa_code_requested"  # the password was right; the login waits for a code
    mfa_code_rejected = "mfa_code_rejected"
    mfa_lockout = "mfa_lockout"


class SecurityEventInDB(CoreModel):
    id: int
    created_at: datetime
    kind: str
    user_id: int | None
    client_address: str | None
    detail: str | None
    # The X-Request-ID of the request that recorded it; None for events recorded outside a request.
    request_id: str | None = None


class SecurityEventPublic(SecurityEventInDB):
    pass


class SecurityEventsPage(CoreModel):
    events: list[SecurityEventPublic]
    total: int
    limit: int
    offset: int
