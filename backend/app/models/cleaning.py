from enum import StrEnum
from typing import Annotated

from pydantic import Field, Strict, field_validator
from pydantic.json_schema import SkipJsonSchema

from app.models.core import CoreModel, DateTimeModelMixin, IDModelMixin, Text, number_text
from app.models.user import UserPublic

# The column is numeric(10, 2): anything that rounds past 99,999,999.99 would overflow it.
MAX_PRICE = 99_999_999.99
# A number (integers are numbers too), or the text of one as a form sends it ("29.99", "30"):
# never `true`, NaN or Infinity. Text has at most 8 digits before the point, as the column.
Price = Annotated[
    float,
    Strict(),
    Field(ge=0, le=MAX_PRICE, allow_inf_nan=False),
    *number_text({"type": "number", "minimum": 0, "maximum": MAX_PRICE}, r"\+?([0-9]{1,8}(\.[0-9]*)?|\.[0-9]+)", float),
]
# Names are indexed, and a b-tree entry must stay well under PostgreSQL's ~2.7 kB limit.
CleaningName = Annotated[Text, Field(min_length=1, max_length=200)]


class CleaningType(StrEnum):
    dust_up = "dust_up"
    spot_clean = "spot_clean"
    full_clean = "full_clean"


class CleaningBase(CoreModel):
    """All common characteristics of a cleaning."""

    name: CleaningName | None = None
    description: Text | None = None
    price: Price | None = None
    cleaning_type: CleaningType | None = CleaningType.spot_clean


class CleaningCreate(CleaningBase):
    name: CleaningName
    price: Price
    cleaning_type: CleaningType = CleaningType.spot_clean


class CleaningUpdate(CleaningBase):
    # Name and price may be left out, not set to null (the schema says so: no null in it).
    name: CleaningName | SkipJsonSchema[None] = None
    price: Price | SkipJsonSchema[None] = None
    cleaning_type: CleaningType | None = None

    @field_validator("name", "price")
    @classmethod
    def not_null(cls, value: object) -> object:
        # Leaving a field out keeps it; sending null for a required column is an error.
        if value is None:
            raise ValueError("cannot be null")
        return value


class CleaningInDB(IDModelMixin, DateTimeModelMixin, CleaningBase):
    name: str
    price: float
    cleaning_type: CleaningType
    owner: int | None  # the owning user's id; None for cleanings created before owners existed


class CleaningPublic(IDModelMixin, DateTimeModelMixin, CleaningBase):
    # The owner's id; GET by id embeds the owner instead, with their profile (Part 17). The user
    # comes first: pydantic serializes a union by trying its members in order, and a model that
    # fails the `int` first costs about as much again as serializing it (a feed page: 40 µs of 90).
    owner: UserPublic | int | None = None


# A cleaning as the repositories hand it out: with its owner embedded, or with the owner's id.
AnyCleaning = CleaningInDB | CleaningPublic
