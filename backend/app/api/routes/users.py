from typing import Annotated

from fastapi import APIRouter, Body, Depends, Form, HTTPException, Path, Query, status
from starlette.concurrency import run_in_threadpool

from app.api.dependencies.auth import CurrentSuperuser, CurrentUser, unauthorized
from app.api.dependencies.database import get_repository
from app.db.errors import EmailAlreadyTakenError, UsernameAlreadyTakenError
from app.db.repositories.users import UsersRepository
from app.models.token import AccessToken
from app.models.user import (
    UserCreate,
    UserInDB,
    UserPasswordChange,
    UserPublic,
    UsersPage,
    UserUpdate,
)
from app.services import auth_service

router = APIRouter()

UsersRepo = Annotated[UsersRepository, Depends(get_repository(UsersRepository))]

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


def access_token_for(user: UserInDB) -> AccessToken:
    token = auth_service.create_access_token_for_user(user=user)
    assert token is not None  # a stored user always gets one
    return AccessToken(access_token=token, token_type="bearer")


def public(user: UserInDB, *, access_token: AccessToken | None = None) -> UserPublic:
    return UserPublic(**user.model_dump(exclude={"password", "salt", "token_version"}), access_token=access_token)


@router.post(
    "/",
    response_model=UserPublic,
    name="users:register-new-user",
    status_code=status.HTTP_201_CREATED,
)
async def register_new_user(
    new_user: Annotated[UserCreate, Body(embed=True)],
    user_repo: UsersRepo,
) -> UserPublic:
    try:
        created_user = await user_repo.register_new_user(new_user=new_user)
    except (EmailAlreadyTakenError, UsernameAlreadyTakenError) as exc:
        raise name_taken(exc) from exc
    return public(created_user, access_token=access_token_for(created_user))


@router.post("/login/token/", response_model=AccessToken, name="users:login-email-and-password")
async def user_login_with_email_and_password(
    user_repo: UsersRepo,
    # The OAuth2 password form; `username` carries the email (a username works too). Missing or
    # empty fields are a failed login like any other (401), not a malformed request (422).
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> AccessToken:
    user = await user_repo.authenticate_user(email=username, password=password)
    if user is None:
        raise unauthorized(LOGIN_FAILED)
    if not user.is_active:
        raise unauthorized("Not an active user.")
    return access_token_for(user)


@router.get("/me/", response_model=UserPublic, name="users:get-current-user")
async def get_currently_authenticated_user(current_user: CurrentUser) -> UserPublic:
    return public(current_user)


@router.put("/me/", response_model=UserPublic, name="users:update-current-user")
async def update_current_user(
    user_update: Annotated[UserUpdate, Body(embed=True)],
    current_user: CurrentUser,
    user_repo: UsersRepo,
) -> UserPublic:
    try:
        updated = await user_repo.update_user(user=current_user, user_update=user_update)
    except (EmailAlreadyTakenError, UsernameAlreadyTakenError) as exc:
        raise name_taken(exc) from exc
    return public(updated)


@router.put("/me/password/", response_model=UserPublic, name="users:change-password")
async def change_password(
    password_change: Annotated[UserPasswordChange, Body(embed=True)],
    current_user: CurrentUser,
    user_repo: UsersRepo,
) -> UserPublic:
    """Change the caller's password. Every token issued before is revoked; the answer carries a new one."""
    verified = await run_in_threadpool(
        auth_service.verify_password,
        password=password_change.current_password,
        salt=current_user.salt,
        hashed_pw=current_user.password,
    )
    if not verified:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=WRONG_CURRENT_PASSWORD)
    if password_change.new_password == password_change.current_password:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=SAME_PASSWORD)
    password_update = await run_in_threadpool(
        auth_service.create_salt_and_hashed_password, plaintext_password=password_change.new_password
    )
    updated = await user_repo.update_password(user=current_user, password_update=password_update)
    return public(updated, access_token=access_token_for(updated))


@router.get("/", response_model=UsersPage, name="users:list-users")
async def list_users(
    superuser: CurrentSuperuser,
    user_repo: UsersRepo,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> UsersPage:
    """Every user, oldest first, a page at a time (superusers only)."""
    users, total = await user_repo.list_users(limit=limit, offset=offset)
    return UsersPage(users=[public(user) for user in users], total=total, limit=limit, offset=offset)


async def _set_user_active(user_repo: UsersRepository, *, user_id: int, is_active: bool) -> UserPublic:
    user = await user_repo.set_user_active(id=user_id, is_active=is_active)
    if user is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=USER_NOT_FOUND)
    return public(user)


@router.post("/{user_id}/deactivate/", response_model=UserPublic, name="users:deactivate-user")
async def deactivate_user(
    user_id: Annotated[int, Path(ge=1)], superuser: CurrentSuperuser, user_repo: UsersRepo
) -> UserPublic:
    """Deactivate a user (superusers only): they cannot log in, and their tokens stop working."""
    if user_id == superuser.id:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=CANNOT_DEACTIVATE_SELF)
    return await _set_user_active(user_repo, user_id=user_id, is_active=False)


@router.post("/{user_id}/reactivate/", response_model=UserPublic, name="users:reactivate-user")
async def reactivate_user(
    user_id: Annotated[int, Path(ge=1)], superuser: CurrentSuperuser, user_repo: UsersRepo
) -> UserPublic:
    """Let a deactivated user log in again (superusers only)."""
    return await _set_user_active(user_repo, user_id=user_id, is_active=True)
