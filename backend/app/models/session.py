from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import Field

from app.models.core import CoreModel


class LogoutScope(StrEnum):
    """Which sessions a logout ends (GoTrue's names)."""

    local = "local"  # the caller's own session
    others = "others"  # every other session of the caller
    global_ = "global"  # all of them


class SessionEndReason(StrEnum):
    logout = "logout"
    ended_by_user = "ended_by_user"
    ended_by_superuser = "ended_by_superuser"
    refresh_token_reused = "refresh_token_reused"
    password_change = "password_change"
    deactivation = "deactivation"
    session_limit = "session_limit"
    password_reset = "password_reset"
    mfa_disabled = "mfa_disabled"  # the caller's other sessions, when they turn the second factor off
    account_deleted = "account_deleted"  # every session of an account deleted (its rows deleted with it)


class SessionInDB(CoreModel):
    id: UUID
    user_id: int
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    idle_expires_at: datetime
    client_address: str | None
    user_agent: str | None


class SessionPublic(CoreModel):
    """A live session of mine: where and when it started, when it was last used, when it ends."""

    id: UUID
    created_at: datetime
    last_used_at: datetime = Field(description="Updated at most once a minute.")
    expires_at: datetime = Field(description="When the session ends whatever happens.")
    idle_expires_at: datetime = Field(description="When the session ends unless it is used before.")
    client_address: str | None
    user_agent: str | None
    current: bool = Field(description="Whether this is the session of the token that asks.")


class SessionsList(CoreModel):
    sessions: list[SessionPublic]


class SessionsEnded(CoreModel):
    ended: int


# A refresh token as issued: 32 random bytes in unpadded base64url (43 characters). Anything longer
# is refused before it is hashed.
RefreshTokenText = Annotated[str, Field(min_length=1, max_length=128)]


class RefreshRequest(CoreModel):
    refresh_token: RefreshTokenText
