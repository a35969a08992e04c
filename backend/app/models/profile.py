"""A user's public profile (Part 9): who they are, beyond the account."""

from typing import Annotated

from pydantic import AfterValidator, Field, HttpUrl, TypeAdapter, ValidationError

from app.models.core import CoreModel, DateTimeModelMixin, IDModelMixin, Text, storable_text

MAX_IMAGE_URL_LENGTH = 2048
# An http(s) URL whose host is a name (its last label starts with a letter): what browsers load
# as an image. The pattern is in the OpenAPI document too, so clients know what is accepted; it
# leaves out IP literals and the hosts URL parsers read as numbers ("1.2.3.999").
IMAGE_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*(:[0-9]{1,4})?([/?#][!-~]*)?$"

_http_url: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _http_url_string(value: str) -> str:
    # Checked as a URL, stored as the string the user sent: pydantic's HttpUrl is not a str
    # (asyncpg cannot bind it to a text column) and may rewrite it (a trailing slash added).
    try:
        _http_url.validate_python(storable_text(value))
    except ValidationError as exc:
        raise ValueError("must be an http or https URL") from exc
    return value


ImageUrl = Annotated[
    str, Field(max_length=MAX_IMAGE_URL_LENGTH, pattern=IMAGE_URL_PATTERN), AfterValidator(_http_url_string)
]
FullName = Annotated[Text, Field(max_length=100)]
# Digits and the usual separators ("555-333-1000", "+44 (0)20 7946 0018", "555.0100 x12").
PhoneNumber = Annotated[str, Field(max_length=32, pattern=r"^[0-9+()./ x-]*$")]
Bio = Annotated[Text, Field(max_length=2000)]


class ProfileBase(CoreModel):
    full_name: FullName | None = None
    phone_number: PhoneNumber | None = None
    bio: Bio | None = None
    image: ImageUrl | None = None


class ProfileCreate(ProfileBase):
    """The profile every new user gets, empty until they fill it in."""

    user_id: int


class ProfileUpdate(ProfileBase):
    """A field left out keeps its value; a field sent as null is cleared."""


class ProfileInDB(IDModelMixin, DateTimeModelMixin, ProfileBase):
    user_id: int
    # The owner's names, filled where the profile is read together with its user.
    username: str | None = None
    email: str | None = None


class ProfilePublic(ProfileInDB):
    pass
