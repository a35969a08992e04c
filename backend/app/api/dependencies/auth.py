"""Who is asking: the bearer token of a request, checked, and the user it names."""

from typing import Annotated
from uuid import UUID

from databases import Database
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from fastapi.security.base import SecurityBase

from app.api.dependencies.database import database_of
from app.core.config import API_PREFIX
from app.core.logging import set_current_user
from app.db.repositories.sessions import SessionsRepository
from app.models.user import UserInDB
from app.services import auth_service
from app.services.authentication import INVALID_TOKEN, AuthException

# tokenUrl is what Swagger UI's Authorize button posts the username and password to.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl=f"{API_PREFIX}/users/login/token/")

NO_USER = "No authenticated user."
NOT_ACTIVE = "Not an active user."
NOT_SUPERUSER = "Superuser privileges are required for this action."
SESSION_ENDED = "This session has ended. Log in again."


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def get_user_from_token(*, token: str, db: Database) -> UserInDB:
    """The user the token names, if the token and its session are good (active or not)."""
    try:
        claims = auth_service.decode_access_token(token=token)
    except AuthException as exc:
        raise unauthorized(INVALID_TOKEN) from exc
    if claims.sid is None:
        # Minted outside any session (the tutorial's helper called directly): nothing could end it.
        raise unauthorized(INVALID_TOKEN)
    # One query loads the user and their profile and tells whether the token's session is alive.
    # The user is found by id (`uid`), never by the email or username the token names: those can
    # pass to another account after a change.
    user, session_alive = await SessionsRepository(db).get_session_user(user_id=claims.uid, session_id=claims.sid)
    if user is None:
        raise unauthorized(NO_USER)
    if not user.is_active:
        return user  # refused by get_current_active_user, with the message that says why
    if not session_alive:
        raise unauthorized(SESSION_ENDED)
    if claims.ver != user.token_version:
        # Minted before the user's last password change (the caller's own session goes on).
        raise unauthorized(INVALID_TOKEN)
    return user


class ActiveUserFromToken(SecurityBase):
    """The active user a request's bearer token names: a dependency FastAPI solves in one step.

    It runs on every authenticated request, and each dependency FastAPI solves costs it about
    20 µs (docs/performance.md), so the token is read here rather than by a dependency of its own.
    Being the token's security scheme (its model and name are `scheme`'s), it still puts the
    padlock and the Authorize button in the OpenAPI document, exactly as `scheme` would.
    """

    def __init__(self, scheme: OAuth2PasswordBearer) -> None:
        self.scheme = scheme
        self.model = scheme.model
        self.scheme_name = scheme.scheme_name

    async def __call__(self, request: Request) -> UserInDB:
        token = await self.scheme(request)  # no bearer token: 401 "Not authenticated"
        assert token is not None  # the scheme refuses instead (auto_error)
        user = await get_user_from_token(token=token, db=database_of(request))
        set_current_user(user.id)  # the request's later log lines and its access line name them
        if not user.is_active:
            raise unauthorized(NOT_ACTIVE)
        return user


get_current_active_user = ActiveUserFromToken(oauth2_scheme)


CurrentUser = Annotated[UserInDB, Depends(get_current_active_user)]


async def get_current_superuser(user: CurrentUser) -> UserInDB:
    if not user.is_superuser:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=NOT_SUPERUSER)
    return user


CurrentSuperuser = Annotated[UserInDB, Depends(get_current_superuser)]


async def get_current_session_id(
    token: Annotated[str, Depends(oauth2_scheme)],
    user: CurrentUser,
) -> UUID:
    """The session of the request's token (checked alive by `CurrentUser`)."""
    try:
        claims = auth_service.decode_access_token(token=token)  # verified a moment ago: from the cache
    except AuthException as exc:  # expired in the meantime
        raise unauthorized(INVALID_TOKEN) from exc
    assert claims.sid is not None  # get_user_from_token refuses tokens without one
    return claims.sid


CurrentSessionId = Annotated[UUID, Depends(get_current_session_id)]
