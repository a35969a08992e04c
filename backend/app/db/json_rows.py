"""A model's JSON written by PostgreSQL, byte for byte what pydantic would write for it.

A page of the feed is twenty cleanings, each with its owner and the owner's profile: about forty
values a row. Read into Python, each value is decoded by the driver, put into a model, and written
out again by pydantic; that was most of the request's time (docs/performance.md). Here the query
writes the answer itself: `model_json(Model, columns)` is a SQL expression that builds the JSON of
one `Model` from the row's columns, field by field in the model's order, each written as pydantic
writes it (compact, timestamps in UTC as `...T12:34:56.123456Z` or without a fraction when it is
zero, floats with a fractional part, strings escaped as JSON). tests/test_json_rows.py compares the
two writers byte for byte, on rows with every kind of value they hold.

Only what such a row holds is supported, and anything else is refused when the statement is built,
so that a model that gains a serializer or an unsupported field type cannot drift silently:
strings (and string enums and literals), integers, booleans, floats within the range a
numeric(10, 2) column holds, timestamps with a time zone, nested models, and None.
"""

import enum
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, EmailStr

NULL = "NULL"  # a field that is always null in the row (the user's access token in a feed item)
# A timestamp as pydantic writes it, quoted: microseconds, or none when they are zero (the replace).
_TIMESTAMP = r"""'\"YYYY-MM-DD"T"HH24:MI:SS.US"Z"\"'"""


def model_json(model: type[BaseModel], columns: Mapping[str, str]) -> str:
    """SQL text of the JSON object of `model`: `columns` holds a SQL expression for every field
    (a column, NULL, or for a nested model its own `model_json`, wrapped in `nested`)."""
    _refuse_custom_serialization(model)
    parts = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        if field.alias or field.serialization_alias:
            raise TypeError(f"{model.__name__}.{name}: aliases are not supported")
        if name not in columns:
            raise KeyError(f"{model.__name__}.{name} has no column")
        expression = columns[name]
        parts.append((name, _value(field.annotation, expression, f"{model.__name__}.{name}")))
    if not parts:
        return "'{}'"
    pieces = []
    for index, (name, value) in enumerate(parts):
        lead = "{" if index == 0 else ","
        pieces.append(f"'{lead}\"{name}\":' || {value}")
    # (A chain of || measured as fast as one concat() here, which converts each argument by type.)
    return "(" + " || ".join(pieces) + " || '}')"


def nested(model_json_sql: str, *, present: str) -> str:
    """A nested model's JSON, or null where the SQL condition `present` is false (no joined row)."""
    return f"CASE WHEN {present} THEN {model_json_sql} ELSE 'null' END"


def json_array(item_json_sql: str, *, order_by: str) -> str:
    """An aggregate: the JSON array of the rows' items, in `order_by` order ([] for no rows)."""
    return f"'[' || COALESCE(string_agg({item_json_sql}, ',' ORDER BY {order_by}), '') || ']'"


def _value(annotation: Any, expression: str, where: str) -> str:
    if expression == NULL:
        return "'null'"
    kind = _kind(annotation, where)
    if kind is BaseModel:  # the caller built it with model_json (and nested, for null)
        return expression
    if kind is datetime:
        # One to_char and a replace: twice as fast in PostgreSQL as choosing the format first.
        return f"COALESCE(replace(to_char(({expression}) AT TIME ZONE 'UTC', {_TIMESTAMP}), '.000000Z', 'Z'), 'null')"
    if kind is float:
        number = f"({expression})::float8"
        # pydantic writes 1.0 where PostgreSQL writes 1, and null for NaN and the infinities.
        return (
            f"CASE WHEN {number} IS NULL OR {number} IN ('NaN', 'Infinity', '-Infinity') THEN 'null' "
            f"WHEN strpos({number}::text, '.') > 0 THEN {number}::text ELSE {number}::text || '.0' END"
        )
    if kind is str:
        return f"COALESCE(to_json(({expression})::text)::text, 'null')"
    return f"COALESCE(({expression})::text, 'null')"  # integers and booleans: true, false


def _kind(annotation: Any, where: str) -> type:
    """What a field holds, with None, Annotated and an Optional's None taken off."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) != 1:
            raise TypeError(f"{where}: a union of {members} is not supported")
        return _kind(members[0], where)
    if origin is typing.Literal:
        if all(isinstance(value, str) for value in typing.get_args(annotation)):
            return str
        raise TypeError(f"{where}: only string literals are supported")
    if annotation is EmailStr:  # a str checked as an address, written as the str
        return str
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return BaseModel
        if issubclass(annotation, datetime):
            return datetime
        if issubclass(annotation, bool):
            return bool
        if issubclass(annotation, enum.Enum) and issubclass(annotation, str):
            return str
        for kind in (int, float, str):
            if issubclass(annotation, kind):
                return kind
    raise TypeError(f"{where}: {annotation} is not supported")


def _refuse_custom_serialization(model: type[BaseModel]) -> None:
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers or decorators.computed_fields:
        raise TypeError(f"{model.__name__} has its own serializers: write its JSON with pydantic")
    if model.model_config.get("alias_generator") or model.model_config.get("ser_json_inf_nan", "null") != "null":
        raise TypeError(f"{model.__name__}'s configuration changes its JSON: write it with pydantic")
