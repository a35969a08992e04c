import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, WithJsonSchema


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


# Numbers as forms hold them. An HTML form (and the tutorial's React client, which posts what its
# form holds) sends every number as text: `"price": "29.99"`. The tutorial's models (pydantic 1)
# read such text as the number it spells, so ours do too, but only text that spells a number in
# plain decimal notation, with blanks around it (what a form field holds), and then only within the
# field's range. Booleans stay refused (pydantic 1 read `true` as a price of 1.0), as do NaN and
# Infinity, in any spelling. The OpenAPI document says exactly this (an `anyOf` of the number and a
# pattern for its text), so that generated clients may send either and the fuzzer checks both.
_BLANKS = "[ \t\n\r]*"


def number_text(
    number_schema: dict[str, Any], digits: str, convert: Callable[[str], float | int]
) -> tuple[BeforeValidator, WithJsonSchema]:
    """A number field's metadata that also reads the number written as text matching `digits`.

    Put it after the field's own constraints (a strict number type and its bounds): text that
    does not match is left as it is, for those to refuse with their usual message.
    """
    whole = re.compile(f"{_BLANKS}({digits}){_BLANKS}")

    def from_text(value: object) -> object:
        if isinstance(value, str) and (match := whole.fullmatch(value)):
            return convert(match.group(1))
        return value

    text_schema = {"type": "string", "pattern": f"^{whole.pattern}$"}
    # Validation mode only: answers always carry the number itself.
    return BeforeValidator(from_text), WithJsonSchema({"anyOf": [number_schema, text_schema]}, mode="validation")


def integral_float(value: object) -> object:
    """A float with no fraction as the integer it is (4.0 is 4: JSON has one number type, and
    Python clients send floats), for a strict integer field; 4.5 stays a float, to be refused
    (pydantic 1 cut it to 4 without a word, which would store a rating nobody gave)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Booleans: the words pydantic 1 and 2 both read (in any case), and 0 and 1 (what a checkbox or a
# select holds: "on", "true", "1"). Both read exactly these; only the document is ours.
_BOOLEAN_WORDS = ("0", "off", "f", "false", "n", "no", "1", "on", "t", "true", "y", "yes")
_BOOLEAN_TEXT = (
    "^(" + "|".join("".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in w) for w in _BOOLEAN_WORDS) + ")$"
)
FormBool = Annotated[
    bool,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "boolean"},
                {"type": "integer", "enum": [0, 1]},
                {"type": "string", "pattern": _BOOLEAN_TEXT},
            ]
        },
        mode="validation",
    ),
]
"""A boolean as JSON has it, or as a form sends it ("true", "on", "1")."""


class CoreModel(BaseModel):
    """Any common logic to be shared by all models goes here."""


class DateTimeModelMixin(BaseModel):
    created_at: datetime | None = None
    updated_at: datetime | None = None


class IDModelMixin(BaseModel):
    id: int


ModelT = TypeVar("ModelT", bound=BaseModel)


def construct(model: type[ModelT], fields: dict[str, Any], *, private: dict[str, Any] | None = None) -> ModelT:
    """`model.model_construct(**fields)`, for trusted values that name every one of the model's fields.

    For the rows the hot routes read back, in several times less time: `model_construct` looks up
    aliases and defaults field by field, and validating again costs more still. Sets what
    `model_construct` sets on an instance (tests/test_models.py compares the two for each model
    built this way): `fields` itself as its `__dict__`, all of them as set, no extras, and
    `private` as its private attributes (their defaults for a model that has any).
    """
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", fields)
    object.__setattr__(instance, "__pydantic_fields_set__", set(fields))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", private)
    return instance
