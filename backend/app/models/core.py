from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field


def storable_text(value: str) -> str:
    # PostgreSQL rejects NUL in text, and a lone surrogate ("\ud800" is valid JSON) cannot be
    # encoded as UTF-8: both must be a 422 here rather than a 500 from the driver.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text") from exc
    return value


# The OpenAPI document says so too, so that clients (and fuzzers) know NUL is not text here.
Text = Annotated[str, AfterValidator(storable_text), Field(json_schema_extra={"pattern": "^[^\\x00]*$"})]
"""A string PostgreSQL can store: use it for every free-text field of a request body."""


class CoreModel(BaseModel):
    """Any common logic to be shared by all models goes here."""


class DateTimeModelMixin(BaseModel):
    created_at: datetime | None = None
    updated_at: datetime | None = None


class IDModelMixin(BaseModel):
    id: int
