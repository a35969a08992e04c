from typing import Annotated

from pydantic import EmailStr, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from app.models.core import CoreModel, DateTimeModelMixin, IDModelMixin, Text
from app.models.token import AccessToken

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

    email: EmailStr
    password: Password
    username: Username


class UserUpdate(CoreModel):
    """Users may change their email and username; a field left out keeps its value."""

    # Either may be left out, not set to null (the schema says so: no null in it).
    email: EmailStr | SkipJsonSchema[None] = None
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
    token_version: int = 0


class UserPublic(IDModelMixin, DateTimeModelMixin, UserBase):
    access_token: AccessToken | None = None


class UsersPage(CoreModel):
    """One page of the user list, and where it sits in the whole."""

    users: list[UserPublic]
    total: int
    limit: int
    offset: int
