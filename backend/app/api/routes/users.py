from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Form, HTTPException, Path, Request, Response, status

from app.api.dependencies.auth import (
    NOT_ACTIVE,
    SESSION_ENDED,
    CurrentSessionId,
    CurrentSuperuser,
    CurrentUser,
    unauthorized,
)
from app.api.dependencies.client import ClientAddress, UserAgent, hashing_place
from app.api.dependencies.database import get_repository
from app.api.dependencies.paging import Limit, Offset
from app.api.dependencies.throttling import (
    LOGIN_ACCOUNT,
    RateLimits,
    Throttled,
    count_login_attempt,
    count_password_check,
    count_refresh,
    count_registration,
    count_verification_mail,
    login_account_key,
    uncounted_if_untried,
)
from app.api.errors import error_responses
from app.api.responses import model_response
from app.api.routes.mail import wake_mail_sender
from app.core import config, metrics
from app.core.config import ACCESS_TOKEN_EXPIRE_MINUTES
from app.db.errors import AccountNotActiveError, EmailAlreadyTakenError, UsernameAlreadyTakenError
from app.db.repositories.outbox import MailKind, OutboxRepository
from app.db.repositories.rate_limits import RateLimitsRepository
from app.db.repositories.security_events import SecurityEventsRepository
from app.db.repositories.sessions import RefreshOutcome, SessionsRepository
from app.db.repositories.users import UsersRepository
from app.models.mfa import MfaRequired
from app.models.security_event import SecurityEventKind as Event
from app.models.session import (
    LogoutScope,
    RefreshRequest,
    SessionEndReason,
    SessionInDB,
    SessionPublic,
    SessionsEnded,
    SessionsList,
)
from app.models.token import AccessToken
from app.models.user import (
    AnyUser,
    UserCreate,
    UserInDB,
    UserPasswordChange,
    UserPublic,
    UsersPage,
    UserUpdate,
)
from app.services import auth_service, hashing_pool
from app.services.mfa import MFA_CHALLENGE_SECONDS, create_challenge, second_factor_on
from app.services.notices import NoticeKind, queue_notice

router = APIRouter()

UsersRepo = Annotated[UsersRepository, Depends(get_repository(UsersRepository))]
Events = Annotated[SecurityEventsRepository, Depends(get_repository(SecurityEventsRepository))]
Sessions = Annotated[SessionsRepository, Depends(get_repository(SessionsRepository))]

EMAIL_TAKEN = "That email is already taken. Login with that email or register with another one."
USERNAME_TAKEN = "That username is already taken. Please try another one."
LOGIN_FAILED = "Authentication was unsuccessful."
WRONG_CURRENT_PASSWORD = "The current password is incorrect."
SAME_PASSWORD = "The new password must be different from the current one."
USER_NOT_FOUND = "No user found with that id."
CANNOT_DEACTIVATE_SELF = "Superusers cannot deactivate themselves."
INVALID_REFRESH_TOKEN = "Invalid refresh token."
REFRESH_TOKEN_REUSED = "This refresh token was used before, so its session has ended. Log in again."
SESSION_NOT_FOUND = "No active session of yours has that id."
EMAIL_NOT_VERIFIED = "Confirm your email address before you log in: a new link is on its way to it."


def name_taken(exc: EmailAlreadyTakenError | UsernameAlreadyTakenError) -> HTTPException:
    detail = EMAIL_TAKEN if isinstance(exc, EmailAlreadyTakenError) else USERNAME_TAKEN
    return HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=detail)


async def resend_verification(
    request: Request, limits: RateLimitsRepository, outbox: OutboxRepository, user: UserInDB, client_address: str
) -> None:
    """A new verification mail for a user refused at login for want of one (unless they asked for
    too many already: then the last ones are still on their way)."""
    try:
        await count_verification_mail(limits, user_id=user.id)
    except Throttled:
        return
    await outbox.enqueue(
        kind=MailKind.email_verification, recipient=user.email, user_id=user.id, client_address=client_address
    )
    wake_mail_sender(request)


def tokens_for(user: AnyUser, session: SessionInDB, *, refresh_token: str | None = None) -> AccessToken:
    """An access token of the session (never outliving it), with the refresh token just issued."""
    now = datetime.now(UTC)
    expires_at = min(now + timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES), session.expires_at)
    token = auth_service.create_access_token_for_user(user=user, session_id=session.id, not_after=expires_at)
    assert token is not None  # a stored user always gets one
    expires_in = max(0, int((expires_at - now).total_seconds()))
    return AccessToken(access_token=token, token_type="bearer", expires_in=expires_in, refresh_token=refresh_token)


async def start_session(
    sessions: SessionsRepository, user: AnyUser, *, client_address: str, user_agent: str | None
) -> tuple[SessionInDB, AccessToken]:
    try:
        session, refresh_token = await sessions.start_session(
            user_id=user.id, client_address=client_address, user_agent=user_agent
        )
    except AccountNotActiveError as exc:  # deactivated or deleted since its password was checked
        raise unauthorized(NOT_ACTIVE) from exc
    metrics.SESSIONS_STARTED.inc()
    return session, tokens_for(user, session, refresh_token=refresh_token)


def public(user: UserInDB, *, access_token: AccessToken | None = None) -> UserPublic:
    # UserPublic has no password, salt or token version field: they cannot come along.
    return UserPublic.from_user(user, access_token=access_token)


@router.post(
    "/",
    response_model=UserPublic,
    name="users:register-new-user",
    summary="Register",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 413, 429, 503, e400=EMAIL_TAKEN),
)
async def register_new_user(
    request: Request,
    new_user: Annotated[UserCreate, Body(embed=True)],
    user_repo: UsersRepo,
    limits: RateLimits,
    events: Events,
    sessions: Sessions,
    client_address: ClientAddress,
    user_agent: UserAgent = None,
) -> UserPublic:
    """Register, and be logged in at once (a new session: an access token and a refresh token).
    Registrations are limited per client address."""
    async with hashing_place(request):
        hit = await count_registration(limits, address=client_address)
        try:
            async with uncounted_if_untried(limits, hit):
                created_user = await user_repo.register_new_user(new_user=new_user)
        except (EmailAlreadyTakenError, UsernameAlreadyTakenError) as exc:
            raise name_taken(exc) from exc
    wake_mail_sender(request)  # the verification mail, enqueued with the user
    if config.LOGIN_REQUIRES_VERIFIED_EMAIL:  # no session until the email is verified
        await events.record(kind=Event.registration, user_id=created_user.id, client_address=client_address)
        return created_user
    session, tokens = await start_session(sessions, created_user, client_address=client_address, user_agent=user_agent)
    await events.record(
        kind=Event.registration, user_id=created_user.id, client_address=client_address, detail=f"session {session.id}"
    )
    return created_user.model_copy(update={"access_token": tokens})


@router.post(
    "/login/token/",
    response_model=AccessToken | MfaRequired,
    name="users:login-email-and-password",
    summary="Log in",
    responses=error_responses(400, 401, 413, 429, 503, e401=LOGIN_FAILED),
)
async def user_login_with_email_and_password(
    request: Request,
    user_repo: UsersRepo,
    limits: RateLimits,
    events: Events,
    sessions: Sessions,
    client_address: ClientAddress,
    user_agent: UserAgent = None,
    # The OAuth2 password form; `username` carries the email (a username works too). Missing or
    # empty fields are a failed login like any other (401), not a malformed request (422).
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> AccessToken | MfaRequired:
    """Log in with email (or username) and password: a new session, with an access token and a
    refresh token. Failed logins are limited per account and per client address: past the limit
    the answer is 429 with Retry-After, whether or not the account exists. For an account with
    two-factor sign-in on, the answer is `{"mfa_required": true, "mfa_token": ...}` instead, and
    no session: the second step (`POST /api/users/login/mfa/`) takes the token and a code."""
    async with hashing_place(request):
        try:
            hit = await count_login_attempt(limits, login=username, address=client_address)
        except Throttled:
            named = await user_repo.get_user_by_login(login=username)
            await events.record(kind=Event.lockout, user_id=named.id if named else None, client_address=client_address)
            raise
        async with uncounted_if_untried(limits, hit):
            user, verified = await user_repo.check_credentials(login=username, password=password)
    if user is None or not verified:
        user_id = user.id if user else None
        await events.record(kind=Event.login_failure, user_id=user_id, client_address=client_address)
        raise unauthorized(LOGIN_FAILED)
    # The right password: this attempt does not count against the address, and the account's slate is wiped.
    await limits.clear(bucket=LOGIN_ACCOUNT, key=login_account_key(username), hit=hit)
    if not user.is_active:
        raise unauthorized(NOT_ACTIVE)
    if config.LOGIN_REQUIRES_VERIFIED_EMAIL and not user.email_verified:
        await resend_verification(request, limits, OutboxRepository(user_repo.db), user, client_address)
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=EMAIL_NOT_VERIFIED)
    if await second_factor_on(user_repo.db, user.id):
        # The password was right; the session waits for a code (app/api/routes/mfa.py).
        mfa_token = await create_challenge(
            user_repo.db, user_id=user.id, token_version=user.token_version, client_address=client_address
        )
        await events.record(kind=Event.mfa_code_requested, user_id=user.id, client_address=client_address)
        return MfaRequired(mfa_token=mfa_token, expires_in=MFA_CHALLENGE_SECONDS)
    session, tokens = await start_session(sessions, user, client_address=client_address, user_agent=user_agent)
    await events.record(
        kind=Event.login_success, user_id=user.id, client_address=client_address, detail=f"session {session.id}"
    )
    return tokens


@router.get(
    "/me/",
    response_model=UserPublic,
    name="users:get-current-user",
    summary="Get my account",
    responses=error_responses(401, 503),
)
async def get_currently_authenticated_user(current_user: CurrentUser) -> Response:
    """The logged-in user."""
    return model_response(public(current_user))


@router.put(
    "/me/",
    response_model=UserPublic,
    name="users:update-current-user",
    summary="Change my email or username",
    responses=error_responses(400, 401, 413, 503, e400=USERNAME_TAKEN),
)
async def update_current_user(
    request: Request,
    user_update: Annotated[UserUpdate, Body(embed=True)],
    current_user: CurrentUser,
    user_repo: UsersRepo,
    client_address: ClientAddress,
) -> UserPublic:
    """Change the caller's email and/or username. Tokens keep working; a new email is unverified.
    A new email is told to the old address (when, and from which client address)."""
    try:
        async with user_repo.db.transaction():  # the new email and its notice, or neither
            updated = await user_repo.update_user(user=current_user, user_update=user_update)
            if updated.email.lower() != current_user.email.lower():
                await queue_notice(
                    user_repo.db,
                    current_user,  # to the address it had
                    NoticeKind.email_changed,
                    client_address=client_address,
                    new_email=updated.email,
                )
    except (EmailAlreadyTakenError, UsernameAlreadyTakenError) as exc:
        raise name_taken(exc) from exc
    if updated.email != current_user.email:
        wake_mail_sender(request)
    return public(updated)


@router.put(
    "/me/password/",
    response_model=UserPublic,
    name="users:change-password",
    summary="Change my password",
    responses=error_responses(400, 401, 413, 429, 503, e400=WRONG_CURRENT_PASSWORD),
)
async def change_password(
    request: Request,
    password_change: Annotated[UserPasswordChange, Body(embed=True)],
    current_user: CurrentUser,
    session_id: CurrentSessionId,
    user_repo: UsersRepo,
    sessions: Sessions,
    limits: RateLimits,
    events: Events,
    client_address: ClientAddress,
) -> UserPublic:
    """Change the caller's password. Every other session ends, and every access token issued
    before is refused; the answer carries a new one for this session (whose refresh token stays
    as it was)."""
    async with hashing_place(request):
        hit = await count_password_check(limits, user_id=current_user.id)
        async with uncounted_if_untried(limits, hit):
            verified = await hashing_pool.run(
                auth_service.verify_password,
                password=password_change.current_password,
                salt=current_user.salt,
                hashed_pw=current_user.password,
            )
        if not verified:
            raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=WRONG_CURRENT_PASSWORD)
        await limits.forget_hit(hit=hit)
        if password_change.new_password == password_change.current_password:
            raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=SAME_PASSWORD)
        password_update = await hashing_pool.run(
            auth_service.create_salt_and_hashed_password, plaintext_password=password_change.new_password
        )
    async with user_repo.db.transaction():  # the new password and its notice, or neither
        updated = await user_repo.update_password(
            user=current_user, password_update=password_update, keep_session=session_id
        )
        await queue_notice(user_repo.db, updated, NoticeKind.password_changed, client_address=client_address)
    wake_mail_sender(request)
    await events.record(
        kind=Event.password_change,
        user_id=updated.id,
        client_address=client_address,
        detail=f"session {session_id} kept",
    )
    session = await sessions.get_live_session(user_id=updated.id, session_id=session_id)
    if session is None:  # logged out from another tab in the meantime
        raise unauthorized(SESSION_ENDED)
    return public(updated, access_token=tokens_for(updated, session))


@router.get(
    "/",
    response_model=UsersPage,
    name="users:list-users",
    summary="List users",
    responses=error_responses(401, 403, 503),
)
async def list_users(
    superuser: CurrentSuperuser,
    user_repo: UsersRepo,
    limit: Limit = 50,
    offset: Offset = 0,
) -> UsersPage:
    """Every user, oldest first, a page at a time (superusers only)."""
    users, total = await user_repo.list_users(limit=limit, offset=offset)
    return UsersPage(users=[public(user) for user in users], total=total, limit=limit, offset=offset)


async def _set_user_active(
    user_repo: UsersRepository, events: SecurityEventsRepository, *, user_id: int, is_active: bool, client_address: str
) -> UserPublic:
    user = await user_repo.set_user_active(id=user_id, is_active=is_active)
    if user is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=USER_NOT_FOUND)
    kind = Event.reactivation if is_active else Event.deactivation
    await events.record(kind=kind, user_id=user.id, client_address=client_address)
    return public(user)


@router.post(
    "/{user_id}/deactivate/",
    response_model=UserPublic,
    name="users:deactivate-user",
    summary="Deactivate a user",
    responses=error_responses(400, 401, 403, 404, 503, e400=CANNOT_DEACTIVATE_SELF, e404=USER_NOT_FOUND),
)
async def deactivate_user(
    user_id: Annotated[int, Path(ge=1)],
    superuser: CurrentSuperuser,
    user_repo: UsersRepo,
    events: Events,
    client_address: ClientAddress,
) -> UserPublic:
    """Deactivate a user (superusers only): they cannot log in, and their tokens stop working."""
    if user_id == superuser.id:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=CANNOT_DEACTIVATE_SELF)
    return await _set_user_active(user_repo, events, user_id=user_id, is_active=False, client_address=client_address)


@router.post(
    "/{user_id}/reactivate/",
    response_model=UserPublic,
    name="users:reactivate-user",
    summary="Reactivate a user",
    responses=error_responses(401, 403, 404, 503, e404=USER_NOT_FOUND),
)
async def reactivate_user(
    user_id: Annotated[int, Path(ge=1)],
    superuser: CurrentSuperuser,
    user_repo: UsersRepo,
    events: Events,
    client_address: ClientAddress,
) -> UserPublic:
    """Let a deactivated user log in again (superusers only)."""
    return await _set_user_active(user_repo, events, user_id=user_id, is_active=True, client_address=client_address)


@router.post(
    "/{user_id}/end-sessions/",
    response_model=SessionsEnded,
    name="users:end-user-sessions",
    summary="End all sessions of a user",
    responses=error_responses(401, 403, 404, 503, e404=USER_NOT_FOUND),
)
async def end_user_sessions(
    user_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    superuser: CurrentSuperuser,
    user_repo: UsersRepo,
    sessions: Sessions,
    events: Events,
    client_address: ClientAddress,
) -> SessionsEnded:
    """Log a user out everywhere (superusers only): every session of theirs ends at once. They
    can log in again; to keep them out, deactivate them."""
    if await user_repo.get_user_by_id(user_id=user_id, populate=False) is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=USER_NOT_FOUND)
    ended = await sessions.end_sessions(user_id=user_id, reason=SessionEndReason.ended_by_superuser)
    await events.record(
        kind=Event.sessions_ended_by_superuser,
        user_id=user_id,
        client_address=client_address,
        detail=f"by superuser {superuser.id}: {ended} ended",
    )
    return SessionsEnded(ended=ended)


# Sessions: after the routes above, so that the hot ones (/me/) are matched first.
@router.post(
    "/login/token/refresh/",
    response_model=AccessToken,
    name="users:refresh-access-token",
    summary="Refresh my access token",
    responses=error_responses(400, 401, 413, 429, 503, e401=INVALID_REFRESH_TOKEN),
)
async def refresh_access_token(
    refresh: RefreshRequest,
    sessions: Sessions,
    limits: RateLimits,
    events: Events,
    client_address: ClientAddress,
) -> AccessToken:
    """Trade a refresh token for a new access token and a new refresh token. Each refresh token
    works once: one presented again ends its session (a stolen copy is worth nothing once either
    side uses it), except within a few seconds of its first use, when the same new pair is given
    again (two tabs refreshing at once). Unknown tokens are limited per client address."""
    hit = await count_refresh(limits, address=client_address)
    result = await sessions.refresh(refresh_token=refresh.refresh_token)
    session = result.session
    if result.outcome is RefreshOutcome.unknown or session is None:
        raise unauthorized(INVALID_REFRESH_TOKEN)
    if result.outcome is RefreshOutcome.ended:
        raise unauthorized(SESSION_ENDED)
    if result.outcome is RefreshOutcome.reused:
        # Counted here, where the refresh's transaction has ended the session (and committed).
        metrics.REFRESH_TOKEN_REUSE.inc()
        metrics.count_sessions_ended(SessionEndReason.refresh_token_reused.value)
        await events.record(
            kind=Event.refresh_token_reused,
            user_id=session.user_id,
            client_address=client_address,
            detail=f"session {session.id} ended",
        )
        raise unauthorized(REFRESH_TOKEN_REUSED)
    await limits.forget_hit(hit=hit)
    user = result.user
    if user is None or not user.is_active:
        raise unauthorized(NOT_ACTIVE)
    metrics.SESSIONS_REFRESHED.inc()
    repeated = " (repeated within the grace window)" if result.outcome is RefreshOutcome.repeated else ""
    await events.record(
        kind=Event.session_refreshed,
        user_id=user.id,
        client_address=client_address,
        detail=f"session {session.id}{repeated}",
    )
    return tokens_for(user, session, refresh_token=result.refresh_token)


@router.post(
    "/logout/",
    name="users:logout",
    summary="Log out",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 503),
)
async def logout(
    current_user: CurrentUser,
    session_id: CurrentSessionId,
    sessions: Sessions,
    events: Events,
    client_address: ClientAddress,
    scope: LogoutScope = LogoutScope.local,
) -> Response:
    """End this session (`local`, the default), every other session of mine (`others`), or all of
    them (`global`). Their access tokens are refused from their next request on, and their refresh
    tokens no longer work."""
    if scope is LogoutScope.local:
        ended = int(
            await sessions.end_session(user_id=current_user.id, session_id=session_id, reason=SessionEndReason.logout)
        )
    else:
        except_id = session_id if scope is LogoutScope.others else None
        ended = await sessions.end_sessions(
            user_id=current_user.id, reason=SessionEndReason.logout, except_id=except_id
        )
    await events.record(
        kind=Event.logout,
        user_id=current_user.id,
        client_address=client_address,
        detail=f"scope {scope.value} from session {session_id}: {ended} ended",
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/me/sessions/",
    response_model=SessionsList,
    name="users:list-my-sessions",
    summary="List my sessions",
    responses=error_responses(401, 503),
)
async def list_my_sessions(current_user: CurrentUser, session_id: CurrentSessionId, sessions: Sessions) -> SessionsList:
    """My live sessions, most recently used first; `current` marks the one asking."""
    live = await sessions.list_sessions(user_id=current_user.id)
    return SessionsList(
        sessions=[
            SessionPublic.model_validate({**session.model_dump(), "current": session.id == session_id})
            for session in live
        ]
    )


@router.delete(
    "/me/sessions/{session_id}/",
    name="users:end-my-session",
    summary="End one of my sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404, 503, e404=SESSION_NOT_FOUND),
)
async def end_my_session(
    session_id: UUID,
    current_user: CurrentUser,
    current_session_id: CurrentSessionId,
    sessions: Sessions,
    events: Events,
    client_address: ClientAddress,
) -> Response:
    """End one of my sessions (a lost phone, a shared computer); ending the current one is a logout."""
    ended = await sessions.end_session(
        user_id=current_user.id, session_id=session_id, reason=SessionEndReason.ended_by_user
    )
    if not ended:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=SESSION_NOT_FOUND)
    await events.record(
        kind=Event.session_ended,
        user_id=current_user.id,
        client_address=client_address,
        detail=f"session {session_id} from session {current_session_id}",
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
