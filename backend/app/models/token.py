from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import uuid4

from pydantic import Field, StringConstraints

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
    """How a token identifies its user.

    `sub` is the user's id, which never changes, so tokens survive a change of email or username;
    `ver` is the user's token version when the token was minted (a password change bumps it).
    """

    sub: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,18}$")]
    username: str
    ver: int

    @property
    def user_id(self) -> int:
        return int(self.sub)


class JWTPayload(JWTMeta, JWTCreds):
    """The claims of an access token, right before they are encoded."""


class AccessToken(CoreModel):
    access_token: str
    token_type: str
