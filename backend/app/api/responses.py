"""JSON responses serialized once, by pydantic's Rust core.

A route that returns a model is validated again against its `response_model` and then encoded;
for the hottest read routes that doubles the work of the request. These return the bytes
directly, while `response_model` still documents the shape in the OpenAPI document.
"""

from collections.abc import Sequence
from typing import Any

from fastapi import Response
from pydantic import BaseModel, TypeAdapter


def model_response(model: BaseModel) -> Response:
    return Response(content=model.model_dump_json(), media_type="application/json")


_LIST_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {}


def list_response(model_type: type[BaseModel], items: Sequence[BaseModel]) -> Response:
    adapter = _LIST_ADAPTERS.get(model_type)
    if adapter is None:
        # Built once per model: building a TypeAdapter costs more than serializing a page with it.
        adapter = _LIST_ADAPTERS[model_type] = TypeAdapter(list[model_type])  # type: ignore[valid-type]
    return Response(content=adapter.dump_json(list(items)), media_type="application/json")
