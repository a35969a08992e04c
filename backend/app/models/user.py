from typing import Annotated

from pydantic import EmailStr, StringConstraints

from app.models.core import CoreModel, DateTimeModelMixin, IDModelMixin, Text
from app.models.token import AccessToken

# Usernames are indexed (unique): keep them short enough for any b-tree entry.
Username = Annotated[str, StringConstraints(min_length=3, max_length=32, pattern=r"^[a-zA-Z0-9_-]+$")]
# Any length up to 100 characters is safe: hashing pre-hashes, so bcrypt's 72-byte limit never applies.
Password = Annotated[Text, StringConstraints(min_length=7, max_length=100)]


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
    """Users may change their email and username."""

    email: EmailStr | None = None
    username: Username | None = None


class UserPasswordUpdate(CoreModel):
    """A freshly salted and hashed password, ready to store."""

    password: str
    salt: str


class UserInDB(IDModelMixin, DateTimeModelMixin, UserBase):
    email: str
    username: str
    password: str
    salt: str


class UserPublic(IDModelMixin, DateTimeModelMixin, UserBase):
    access_token: AccessToken | None = None
