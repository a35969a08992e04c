from typing import Annotated

from fastapi import APIRouter, Body, Depends, Form, HTTPException, Path, Response, status

from app.api.dependencies.auth import NOT_ACTIVE, CurrentSuperuser, CurrentUser, unauthorized
from app.api.dependencies.client import ClientAddress
from app.api.dependencies.database import get_repository
from app.api.dependencies.paging import Limit, Offset
from app.api.dependencies.throttling import (
    LOGIN_ACCOUNT,
    RateLimits,
    Throttled,
    count_login_attempt,
    count_password_check,
    count_registration,
    login_account_key,
    uncounted_if_busy,
)
from app.api.errors import error_responses
from app.api.responses import model_response
from app.db.errors import EmailAlreadyTakenError, UsernameAlreadyTakenError
from app.db.repositories.security_events import SecurityEventsRepository
from app.db.repositories.users import UsersRepository
from app.models.security_event import SecurityEventKind as Event
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

router = APIRouter()

UsersRepo = Annotated[UsersRepository, Depends(get_repository(UsersRepository))]
Events = Annotated[SecurityEventsRepository, Depends(get_repository(SecurityEventsRepository))]

EMAIL_TAKEN = "That email is already taken. Login with that email or register with another one."
USERNAME_TAKEN = "That username is already taken. Please try another one."
LOGIN_FAILED = "Authentication was unsuccessful."
WRONG_CURRENT_PASSWORD = "The current password is incorrect."
SAME_PASSWORD = "The new password must be different from the current one."
USER_NOT_FOUND = "No user found with that id."
CANNOT_DEACTIVATE_SELF = "Superusers cannot deactivate themselves."


def name_taken(exc: EmailAlreadyTakenError | UsernameAlreadyTakenError) -> HTTPException:
    detail = EMAIL_TAKEN if isinstance(exc, EmailAlreadyTakenError) else USERNAME_TAKEN
    return HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=detail)


def access_token_for(user: AnyUser) -> AccessToken:
    token = auth_service.create_access_token_for_user(user=user)
    assert token is not None  # a stored user always gets one
    return AccessToken(access_token=token, token_type="bearer")


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
    new_user: Annotated[UserCreate, Body(embed=True)],
    user_repo: UsersRepo,
    limits: RateLimits,
    events: Events,
    client_address: ClientAddress,
) -> UserPublic:
    """Register, and get an access token at once. Registrations are limited per client address."""
    hashing_pool.ensure_capacity()
    hit = await count_registration(limits, address=client_address)
    try:
        async with uncounted_if_busy(limits, hit):
            created_user = await user_repo.register_new_user(new_user=new_user)
    except (EmailAlreadyTakenError, UsernameAlreadyTakenError) as exc:
        raise name_taken(exc) from exc
    await events.record(kind=Event.registration, user_id=created_user.id, client_address=client_address)
    return created_user.model_copy(update={"access_token": access_token_for(created_user)})


@router.post(
    "/login/token/",
    response_model=AccessToken,
    name="users:login-email-and-password",
    summary="Log in",
    responses=error_responses(400, 401, 413, 429, 503, e401=LOGIN_FAILED),
)
async def user_login_with_email_and_password(
    user_repo: UsersRepo,
    limits: RateLimits,
    events: Events,
    client_address: ClientAddress,
    # The OAuth2 password form; `username` carries the email (a username works too). Missing or
    # empty fields are a failed login like any other (401), not a malformed request (422).
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> AccessToken:
    """Log in with email (or username) and password. Failed logins are limited per account and per
    client address: past the limit the answer is 429 with Retry-After, whether or not the account exists."""
    hashing_pool.ensure_capacity()
    try:
        hit = await count_login_attempt(limits, login=username, address=client_address)
    except Throttled:
        named = await user_repo.get_user_by_login(login=username)
        await events.record(kind=Event.lockout, user_id=named.id if named else None, client_address=client_address)
        raise
    async with uncounted_if_busy(limits, hit):
        user, verified = await user_repo.check_credentials(login=username, password=password)
    if user is None or not verified:
        user_id = user.id if user else None
        await events.record(kind=Event.login_failure, user_id=user_id, client_address=client_address)
        raise unauthorized(LOGIN_FAILED)
    # The right password: this attempt does not count against the address, and the account's slate is wiped.
    await limits.clear(bucket=LOGIN_ACCOUNT, key=login_account_key(username), hit=hit)
    if not user.is_active:
        raise unauthorized(NOT_ACTIVE)
    await events.record(kind=Event.login_success, user_id=user.id, client_address=client_address)
    return access_token_for(user)


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
    user_update: Annotated[UserUpdate, Body(embed=True)],
    current_user: CurrentUser,
    user_repo: UsersRepo,
) -> UserPublic:
    """Change the caller's email and/or username. Tokens keep working; a new email is unverified."""
    try:
        updated = await user_repo.update_user(user=current_user, user_update=user_update)
    except (EmailAlreadyTakenError, UsernameAlreadyTakenError) as exc:
        raise name_taken(exc) from exc
    return public(updated)


@router.put(
    "/me/password/",
    response_model=UserPublic,
    name="users:change-password",
    summary="Change my password",
    responses=error_responses(400, 401, 413, 429, 503, e400=WRONG_CURRENT_PASSWORD),
)
async def change_password(
    password_change: Annotated[UserPasswordChange, Body(embed=True)],
    current_user: CurrentUser,
    user_repo: UsersRepo,
    limits: RateLimits,
    events: Events,
    client_address: ClientAddress,
) -> UserPublic:
    """Change the caller's password. Every token issued before is revoked; the answer carries a new one."""
    hashing_pool.ensure_capacity()
    hit = await count_password_check(limits, user_id=current_user.id)
    async with uncounted_if_busy(limits, hit):
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
    updated = await user_repo.update_password(user=current_user, password_update=password_update)
    await events.record(kind=Event.password_change, user_id=updated.id, client_address=client_address)
    return public(updated, access_token=access_token_for(updated))


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
