"""Two-factor sign-in (TOTP, RFC 6238): enrolment, the login's second step, recovery codes,
turning it off, and a superuser's reset. The codes and secrets are the business of
app/services/mfa.py; the routes check who asks, count attempts, audit, and write the notices."""

from typing import Annotated

from databases import Database
from fastapi import APIRouter, Depends, HTTPException, Path, Request, status

from app.api.dependencies.auth import NOT_ACTIVE, CurrentSessionId, CurrentSuperuser, CurrentUser, unauthorized
from app.api.dependencies.client import ClientAddress, UserAgent, hashing_place
from app.api.dependencies.database import get_database, get_repository
from app.api.dependencies.throttling import (
    RateLimits,
    Throttled,
    count_attempt,
    count_password_check,
    uncounted_if_untried,
)
from app.api.errors import error_responses
from app.api.routes.mail import wake_mail_sender
from app.api.routes.users import USER_NOT_FOUND, start_session
from app.core import config
from app.db.repositories.mfa import MfaRepository
from app.db.repositories.security_events import SecurityEventsRepository
from app.db.repositories.sessions import SessionsRepository
from app.db.repositories.users import UsersRepository
from app.models.mfa import (
    MfaCode,
    MfaDisable,
    MfaDisabled,
    MfaEnrolment,
    MfaLogin,
    MfaReset,
    MfaStatus,
    RecoveryCodes,
)
from app.models.security_event import SecurityEventKind as Event
from app.models.session import SessionEndReason
from app.models.token import AccessToken
from app.services import auth_service, hashing_pool
from app.services.authentication import random_token_hash
from app.services.mfa import (
    EnrolmentOutcome,
    SecondFactorThrottled,
    check_second_factor,
    code_accepted,
    confirm_enrolment,
    count_code_attempt,
    new_recovery_code_set,
    otpauth_uri,
    qr_svg,
    secret_text,
    start_enrolment,
    take_code,
)
from app.services.notices import NoticeKind, queue_notice

router = APIRouter()

Db = Annotated[Database, Depends(get_database)]
Mfa = Annotated[MfaRepository, Depends(get_repository(MfaRepository))]
UsersRepo = Annotated[UsersRepository, Depends(get_repository(UsersRepository))]
Events = Annotated[SecurityEventsRepository, Depends(get_repository(SecurityEventsRepository))]
Sessions = Annotated[SessionsRepository, Depends(get_repository(SessionsRepository))]

MFA_ALREADY_ON = "Two-factor sign-in is on already. Turn it off first to enrol another authenticator."
MFA_NOT_STARTED = "No enrolment is waiting: start one first."
MFA_NOT_ON = "Two-factor sign-in is not on for this account."
WRONG_CODE = "That code is not valid. Use the current code from your authenticator app, or an unused recovery code."
WRONG_ENROLMENT_CODE = "That code does not match the new secret. Enter the current code from your authenticator app."
INVALID_MFA_TOKEN = "This sign-in has expired or was used already. Log in with your password again."
WRONG_PASSWORD = "The password is incorrect."

# Unknown or dead mfa_tokens, per client address (counted as failed logins are).
MFA_ADDRESS = "mfa:address"


def too_many_codes(exc: SecondFactorThrottled) -> Throttled:
    return Throttled(exc.retry_after)


@router.get(
    "/me/mfa/",
    response_model=MfaStatus,
    name="users:get-mfa-status",
    summary="Is my two-factor sign-in on?",
    responses=error_responses(401, 503),
)
async def get_mfa_status(current_user: CurrentUser, mfa: Mfa) -> MfaStatus:
    """Whether two-factor sign-in is on for me, since when, and how many recovery codes I have left."""
    factor = await mfa.get_second_factor(user_id=current_user.id)
    if factor is None or factor.enabled_at is None:
        return MfaStatus(enabled=False)
    left = await mfa.recovery_codes_left(user_id=current_user.id)
    return MfaStatus(enabled=True, enabled_at=factor.enabled_at, recovery_codes_left=left)


@router.post(
    "/me/mfa/enrolment/",
    response_model=MfaEnrolment,
    name="users:start-mfa-enrolment",
    summary="Start turning two-factor sign-in on",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 503, e400=MFA_ALREADY_ON),
)
async def start_mfa_enrolment(
    current_user: CurrentUser, db: Db, events: Events, client_address: ClientAddress
) -> MfaEnrolment:
    """A new TOTP secret for an authenticator app, as text, as an `otpauth://` URI and as a QR code
    (SVG). Nothing changes at login until it is confirmed with a code; starting again replaces a
    secret not yet confirmed."""
    enrolment = await start_enrolment(db, user_id=current_user.id)
    if enrolment is None:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=MFA_ALREADY_ON)
    await events.record(kind=Event.mfa_enrolment_started, user_id=current_user.id, client_address=client_address)
    uri = otpauth_uri(enrolment.secret, account=current_user.email)
    return MfaEnrolment(secret=secret_text(enrolment.secret), otpauth_uri=uri, qr_svg=qr_svg(uri))


@router.post(
    "/me/mfa/enrolment/confirm/",
    response_model=RecoveryCodes,
    name="users:confirm-mfa-enrolment",
    summary="Turn two-factor sign-in on",
    responses=error_responses(400, 401, 413, 429, 503, e400=WRONG_ENROLMENT_CODE),
)
async def confirm_mfa_enrolment(
    request: Request,
    body: MfaCode,
    current_user: CurrentUser,
    db: Db,
    events: Events,
    client_address: ClientAddress,
) -> RecoveryCodes:
    """Confirm the enrolment with a current code from the authenticator: two-factor sign-in is on
    from now on, and the answer carries ten single-use recovery codes, shown this once. Wrong codes
    count against the account's limit of code attempts."""
    try:
        hit = await count_code_attempt(db, user_id=current_user.id)
    except SecondFactorThrottled as exc:
        raise too_many_codes(exc) from exc
    async with db.transaction():  # the factor on and its notice, or neither
        outcome, codes, enabled_at = await confirm_enrolment(db, user_id=current_user.id, code=body.code)
        if outcome is EnrolmentOutcome.enabled:
            await queue_notice(db, current_user, NoticeKind.mfa_enabled, client_address=client_address)
    if outcome is EnrolmentOutcome.already_on:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=MFA_ALREADY_ON)
    if outcome is EnrolmentOutcome.not_started:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=MFA_NOT_STARTED)
    if outcome is EnrolmentOutcome.wrong_code:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=WRONG_ENROLMENT_CODE)
    await code_accepted(db, user_id=current_user.id, hit=hit)
    await events.record(kind=Event.mfa_enabled, user_id=current_user.id, client_address=client_address)
    wake_mail_sender(request)
    return RecoveryCodes(enabled_at=enabled_at, recovery_codes=codes)


@router.post(
    "/me/mfa/recovery-codes/",
    response_model=RecoveryCodes,
    name="users:renew-recovery-codes",
    summary="Get new recovery codes",
    responses=error_responses(400, 401, 413, 429, 503, e400=WRONG_CODE),
)
async def renew_recovery_codes(
    body: MfaCode, current_user: CurrentUser, db: Db, mfa: Mfa, events: Events, client_address: ClientAddress
) -> RecoveryCodes:
    """Ten new recovery codes for a current code (or a recovery code): every earlier one stops working."""
    if not await mfa.factor_on(user_id=current_user.id):
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=MFA_NOT_ON)
    try:
        if not await check_second_factor(db, current_user.id, body.code):
            await events.record(kind=Event.mfa_code_rejected, user_id=current_user.id, client_address=client_address)
            raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=WRONG_CODE)
    except SecondFactorThrottled as exc:
        raise too_many_codes(exc) from exc
    codes = await new_recovery_code_set(db, user_id=current_user.id)
    await events.record(kind=Event.mfa_recovery_codes_renewed, user_id=current_user.id, client_address=client_address)
    factor = await mfa.get_second_factor(user_id=current_user.id)
    return RecoveryCodes(enabled_at=factor.enabled_at if factor else None, recovery_codes=codes)


@router.post(
    "/me/mfa/disable/",
    response_model=MfaDisabled,
    name="users:disable-mfa",
    summary="Turn two-factor sign-in off",
    responses=error_responses(400, 401, 413, 429, 503, e400=WRONG_CODE),
)
async def disable_mfa(
    request: Request,
    body: MfaDisable,
    current_user: CurrentUser,
    session_id: CurrentSessionId,
    db: Db,
    mfa: Mfa,
    limits: RateLimits,
    sessions: Sessions,
    events: Events,
    client_address: ClientAddress,
) -> MfaDisabled:
    """Turn two-factor sign-in off, with my password and a current code (or a recovery code).
    Every other session of mine ends; a mail tells my address. Wrong passwords count as on a
    password change, wrong codes against the account's limit of code attempts."""
    if not await mfa.factor_on(user_id=current_user.id):
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=MFA_NOT_ON)
    async with hashing_place(request):
        hit = await count_password_check(limits, user_id=current_user.id)
        async with uncounted_if_untried(limits, hit):
            verified = await hashing_pool.run(
                auth_service.verify_password,
                password=body.password,
                salt=current_user.salt,
                hashed_pw=current_user.password,
            )
    if not verified:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=WRONG_PASSWORD)
    await limits.forget_hit(hit=hit)
    try:
        if not await check_second_factor(db, current_user.id, body.code):
            await events.record(kind=Event.mfa_code_rejected, user_id=current_user.id, client_address=client_address)
            raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=WRONG_CODE)
    except SecondFactorThrottled as exc:
        raise too_many_codes(exc) from exc
    async with db.transaction():  # off, the other sessions ended and the notice written, or none of it
        was_on = await mfa.remove_factor(user_id=current_user.id)
        if was_on:
            ended = await sessions.end_sessions(
                user_id=current_user.id, reason=SessionEndReason.mfa_disabled, except_id=session_id
            )
            await queue_notice(db, current_user, NoticeKind.mfa_disabled, client_address=client_address)
    if not was_on:  # turned off by another request meanwhile
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=MFA_NOT_ON)
    await events.record(
        kind=Event.mfa_disabled,
        user_id=current_user.id,
        client_address=client_address,
        detail=f"from session {session_id}: {ended} other sessions ended",
    )
    wake_mail_sender(request)
    return MfaDisabled(sessions_ended=ended)


@router.post(
    "/{user_id}/mfa/reset/",
    response_model=MfaReset,
    name="users:reset-user-mfa",
    summary="Reset a user's two-factor sign-in",
    responses=error_responses(401, 403, 404, 503, e404=USER_NOT_FOUND),
)
async def reset_user_mfa(
    request: Request,
    user_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    superuser: CurrentSuperuser,
    db: Db,
    mfa: Mfa,
    user_repo: UsersRepo,
    events: Events,
    client_address: ClientAddress,
) -> MfaReset:
    """Turn a user's two-factor sign-in off (superusers only), for a user who lost their
    authenticator and their recovery codes: they log in with their password alone, and can enrol
    again. Audited; the user is told by mail. Their sessions go on."""
    user = await user_repo.get_user_by_id(user_id=user_id, populate=False)
    if user is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=USER_NOT_FOUND)
    async with db.transaction():  # the reset and its notice, or neither
        was_on = await mfa.remove_factor(user_id=user.id)
        if was_on:
            await queue_notice(db, user, NoticeKind.mfa_reset, client_address=client_address)
    await events.record(
        kind=Event.mfa_reset,
        user_id=user.id,
        client_address=client_address,
        detail=f"by superuser {superuser.id}: {'was on' if was_on else 'was not on'}",
    )
    if was_on:
        wake_mail_sender(request)
    return MfaReset(user_id=user.id, was_enabled=was_on)


@router.post(
    "/login/mfa/",
    response_model=AccessToken,
    name="users:login-mfa",
    summary="Log in with a code",
    responses=error_responses(400, 401, 413, 429, 503, e401=INVALID_MFA_TOKEN),
)
async def login_with_second_factor(
    body: MfaLogin,
    db: Db,
    mfa: Mfa,
    user_repo: UsersRepo,
    limits: RateLimits,
    sessions: Sessions,
    events: Events,
    client_address: ClientAddress,
    user_agent: UserAgent = None,
) -> AccessToken:
    """The second step of a login for an account with two-factor sign-in on: the `mfa_token` the
    password step answered (within five minutes, once) and a current code from the authenticator,
    or an unused recovery code. Answers as the login does: a new session. Each code works once;
    wrong ones count against the account and the mfa_token (past its limit, log in again), and
    unknown mfa_tokens against the client address."""
    address_hit = await count_attempt(
        limits,
        keys={MFA_ADDRESS: client_address},
        maxima={MFA_ADDRESS: config.LOGIN_MAX_FAILURES_PER_ADDRESS},
        window_seconds=config.LOGIN_FAILURE_WINDOW_SECONDS,
    )
    token_hash = random_token_hash(body.mfa_token)
    challenge = await mfa.live_challenge(token_hash=token_hash) if token_hash else None
    if token_hash is None or challenge is None:
        raise unauthorized(INVALID_MFA_TOKEN)
    user_id = challenge.user_id
    try:
        hit = await count_code_attempt(db, user_id=user_id, token_hash=token_hash)
    except SecondFactorThrottled as exc:
        await events.record(kind=Event.mfa_lockout, user_id=user_id, client_address=client_address)
        raise too_many_codes(exc) from exc
    try:
        async with db.transaction():
            # The challenge is used up with the code, or neither: after a wrong code it serves again
            # (up to its limit); of two requests with one challenge, the second finds it spent.
            if await mfa.spend_challenge(token_hash=token_hash) is None:
                raise unauthorized(INVALID_MFA_TOKEN)
            code_kind = await take_code(db, user_id=user_id, code=body.code)
            if code_kind is None:
                raise _WrongCodeError
    except _WrongCodeError:
        await events.record(kind=Event.mfa_code_rejected, user_id=user_id, client_address=client_address)
        raise unauthorized(WRONG_CODE) from None
    await code_accepted(db, user_id=user_id, hit=hit)
    await limits.forget_hit(hit=address_hit)
    user = await user_repo.get_user_by_id(user_id=user_id, populate=False)
    if user is None or not user.is_active:
        raise unauthorized(NOT_ACTIVE)
    session, tokens = await start_session(sessions, user, client_address=client_address, user_agent=user_agent)
    await events.record(
        kind=Event.login_success,
        user_id=user.id,
        client_address=client_address,
        detail=f"session {session.id}, second factor: {code_kind.value}",
    )
    return tokens


class _WrongCodeError(Exception):
    """Raised inside the second step's transaction to roll it back (the challenge stays usable)."""
