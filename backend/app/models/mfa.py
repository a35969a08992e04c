"""The second factor (TOTP, RFC 6238): enrolment, the login's second step, turning it off."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import StringConstraints

from app.models.core import CoreModel, Text

# A six-digit code from an authenticator app, or a recovery code (`XXXX-XXXX-XXXX`); blanks and
# dashes are ignored. Anything longer is refused before it is looked at.
Code = Annotated[Text, StringConstraints(min_length=1, max_length=64)]
# An mfa_token as issued: 43 characters.
MfaToken = Annotated[Text, StringConstraints(min_length=1, max_length=128)]


class SecondFactorInDB(CoreModel):
    user_id: int
    secret_sealed: bytes
    created_at: datetime
    enabled_at: datetime | None
    last_used_step: int


class MfaChallengeInDB(CoreModel):
    token_hash: bytes
    user_id: int
    expires_at: datetime


class MfaStatus(CoreModel):
    """Whether my second factor is on, since when, and how many recovery codes I have left."""

    enabled: bool
    enabled_at: datetime | None = None
    recovery_codes_left: int = 0


class MfaEnrolment(CoreModel):
    """A new secret, for an authenticator app: type `secret`, open `otpauth_uri`, or scan `qr_svg`.
    The factor is on only once a code from it is confirmed."""

    secret: str
    otpauth_uri: str
    qr_svg: str


class MfaCode(CoreModel):
    code: Code


class RecoveryCodes(CoreModel):
    """Ten single-use recovery codes, shown this once: each stands in for a code when the
    authenticator is not at hand."""

    enabled: Literal[True] = True
    enabled_at: datetime | None = None
    recovery_codes: list[str]


class MfaDisable(CoreModel):
    """Turning the factor off takes the password and a code (or a recovery code)."""

    password: Annotated[Text, StringConstraints(max_length=4096)]
    code: Code


class MfaDisabled(CoreModel):
    enabled: Literal[False] = False
    # How many of my other sessions ended with it.
    sessions_ended: int


class MfaRequired(CoreModel):
    """The password step of a login for an account with the second factor on: no session yet.
    Send `mfa_token` with a code to the second step (`POST /api/users/login/mfa/`) within
    `expires_in` seconds."""

    mfa_required: Literal[True] = True
    mfa_token: str
    token_type: Literal["mfa"] = "mfa"
    expires_in: int


class MfaLogin(CoreModel):
    mfa_token: MfaToken
    code: Code


class MfaReset(CoreModel):
    """A superuser's reset of a user's second factor."""

    user_id: int
    was_enabled: bool
    enabled: Literal[False] = False
