from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID, uuid4

from pydantic import Field

from app.core.config import ACCESS_TOKEN_EXPIRE_MINUTES, JWT_AUDIENCE
from app.models.core import CoreModel


def _timestamp(after: timedelta = timedelta()) -> int:
    # Timezone-aware on purpose: a naive utcnow().timestamp() is off by the host's UTC offset.
    return int((datetime.now(UTC) + after).timestamp())


JWT_ISSUER = "phresh.io"


class JWTMeta(CoreModel):
    iss: str = JWT_ISSUER
    aud: str = JWT_AUDIENCE
    # Computed when a token is minted, not once when the module is imported.
    iat: int = Field(default_factory=_timestamp)
    exp: int = Field(default_factory=lambda: _timestamp(timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES)))
    # A unique id for every token, for audit trails and any future revocation list.
    jti: str = Field(default_factory=lambda: uuid4().hex)


class JWTCreds(CoreModel):
    """How a token names its user.

    `sub` (the email) and `username` are the tutorial's claims: what the user was called when the
    token was minted, for clients to read. The server never identifies anyone by them, since a name
    can change and be taken by another account afterwards; it goes by `uid`, the user's id, which
    is never reused, `ver`, the user's token version when the token was minted (a password
    change or a deactivation bumps it), and `sid`, its session.
    """

    sub: str
    username: str
    uid: Annotated[int, Field(ge=1, le=2**31 - 1)]
    ver: int
    # The session the token belongs to. Only tokens that name a live session are accepted by the
    # API; a token minted without one (the tutorial's `create_access_token_for_user(user=...)`)
    # still decodes, for its tests, but authenticates nothing.
    sid: UUID | None = None


class JWTPayload(JWTMeta, JWTCreds):
    """The claims of an access token, right before they are encoded."""


class AccessToken(CoreModel):
    """The tutorial's `access_token` and `token_type`, and OAuth2's `expires_in` (seconds) and
    `refresh_token`, for clients that keep a session going (the refresh route takes it)."""

    access_token: str
    token_type: str
    expires_in: int | None = None
    # Only in the answer that issues it (login, registration, refresh); null elsewhere.
    refresh_token: str | None = None
