from typing import Annotated

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import EmailStr, Field, PrivateAttr, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from app.models.core import CoreModel, DateTimeModelMixin, IDModelMixin, Text, construct
from app.models.profile import ProfilePublic
from app.models.token import AccessToken


def _special_use_domains_pattern() -> str:
    # email-validator refuses addresses at special-use domains (a@b.test, x@y.localhost): the
    # OpenAPI document says so too, or clients (and fuzzers) would send them expecting success.
    names = "|".join(
        "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in name) for name in SPECIAL_USE_DOMAIN_NAMES
    )
    return rf"^(?![^@]*@([^@]*\.)?({names})$)"


# An email address that can be registered: EmailStr, and the special-use domains left out.
Email = Annotated[EmailStr, Field(json_schema_extra={"pattern": _special_use_domains_pattern()})]

# Usernames are indexed (unique): keep them short enough for any b-tree entry.
Username = Annotated[str, StringConstraints(min_length=3, max_length=32, pattern=r"^[a-zA-Z0-9_-]+$")]
MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH = 7, 100
# Any length up to 100 characters is safe: hashing pre-hashes, so bcrypt's 72-byte limit never applies.
Password = Annotated[Text, StringConstraints(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)]


class UserBase(CoreModel):
    """What every view of a user shares; never the password or the salt."""

    email: EmailStr | None = None
    username: str | None = None
    email_verified: bool = False
    is_active: bool = True
    is_superuser: bool = False


class UserCreate(CoreModel):
    """Email, username and password are required to register."""

    email: Email
    password: Password
    username: Username


class UserUpdate(CoreModel):
    """Users may change their email and username; a field left out keeps its value."""

    # Either may be left out, not set to null (the schema says so: no null in it).
    email: Email | SkipJsonSchema[None] = None
    username: Username | SkipJsonSchema[None] = None

    @field_validator("email", "username")
    @classmethod
    def not_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("cannot be null")
        return value


class UserPasswordChange(CoreModel):
    """A password change: the current password proves it is the user asking."""

    current_password: Annotated[Text, StringConstraints(max_length=MAX_PASSWORD_LENGTH)]
    new_password: Password


class UserPasswordUpdate(CoreModel):
    """A freshly salted and hashed password, ready to store."""

    password: str
    salt: str


class UserInDB(IDModelMixin, DateTimeModelMixin, UserBase):
    email: str
    username: str
    password: str
    salt: str
    # Internal state, left out of `model_dump()`: what a user looks like "in the database" is
    # compared field by field with their public view (the tutorial's tests do).
    token_version: int = Field(default=0, exclude=True)
    # Loaded with the user where it is needed (the current user of a request).
    profile: ProfilePublic | None = Field(default=None, exclude=True)


class UserPublic(IDModelMixin, DateTimeModelMixin, UserBase):
    access_token: AccessToken | None = None
    profile: ProfilePublic | None = None
    # The token version of the stored user this view was made from (None for a view built from
    # anything else): what a token minted for this view must carry. Never serialized.
    _token_version: int | None = PrivateAttr(default=None)

    @classmethod
    def from_user(cls, user: UserInDB, *, access_token: AccessToken | None = None) -> "UserPublic":
        """The public view of a stored user: no password, no salt, no token version."""
        # Not validated again: the stored values are what they are (an email the migrations renamed
        # to an unroutable `.invalid` address is still this user's, and EmailStr would refuse it).
        stored = {**user.__dict__, "access_token": access_token}
        return construct(
            cls, {field: stored[field] for field in _PUBLIC_USER_FIELDS}, private={"_token_version": user.token_version}
        )

    @property
    def token_version(self) -> int | None:
        return self._token_version


_PUBLIC_USER_FIELDS = tuple(UserPublic.model_fields)


# A deleted account stays as a tombstone (app/db/repositories/account.py), and wherever a cleaning,
# offer or evaluation of theirs is still shown, the user is shown as it: under these names, inactive,
# with no profile. Nobody can register or take them (a username has no dot; `.invalid` addresses
# are refused), and they free the user's own names for anyone to register again.
def deleted_username(user_id: int) -> str:
    return f"deleted-user.{user_id}"


def deleted_email(user_id: int) -> str:
    return f"deleted-{user_id}@phresh.invalid"


# A user as the repositories hand them out: populated (the public view, with a profile) or as stored.
AnyUser = UserInDB | UserPublic


class UsersPage(CoreModel):
    """One page of the user list, and where it sits in the whole."""

    users: list[UserPublic]
    total: int
    limit: int
    offset: int
