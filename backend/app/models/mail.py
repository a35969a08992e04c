from typing import Annotated

from pydantic import Field

from app.models.core import CoreModel
from app.models.user import Email, Password

# A token from a mail: 43 characters as sent; anything much longer is refused before it is hashed.
MailToken = Annotated[str, Field(min_length=1, max_length=128)]


class Notice(CoreModel):
    """An answer that only says what happened."""

    detail: str


class EmailVerification(CoreModel):
    token: MailToken


class EmailVerified(CoreModel):
    email: str
    email_verified: bool


class PasswordResetRequest(CoreModel):
    email: Email


class PasswordReset(CoreModel):
    token: MailToken
    new_password: Password
