from datetime import UTC, datetime, timedelta

from pydantic import EmailStr, Field

from app.core.config import ACCESS_TOKEN_EXPIRE_MINUTES, JWT_AUDIENCE
from app.models.core import CoreModel


def _timestamp(after: timedelta = timedelta()) -> int:
    # Timezone-aware on purpose: a naive utcnow().timestamp() is off by the host's UTC offset.
    return int((datetime.now(UTC) + after).timestamp())


class JWTMeta(CoreModel):
    iss: str = "phresh.io"
    aud: str = JWT_AUDIENCE
    # Computed when a token is minted, not once when the module is imported.
    iat: int = Field(default_factory=_timestamp)
    exp: int = Field(default_factory=lambda: _timestamp(timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES)))


class JWTCreds(CoreModel):
    """How a token identifies its user."""

    sub: EmailStr
    username: str


class JWTPayload(JWTMeta, JWTCreds):
    """The claims of an access token, right before they are encoded."""


class AccessToken(CoreModel):
    access_token: str
    token_type: str
