"""The per-process cache of compiled statements underneath `databases` changes nothing but the cost."""

import enum
from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient
from sqlalchemy import text

from app.db import statements
from app.db.repositories.sessions import GET_SESSION_USER_QUERY


class Kind(enum.StrEnum):
    one = "one"


VALUES = {
    "an_int": 7,
    "a_str": "it's",
    "nothing": None,
    "a_uuid": uuid4(),
    "a_time": datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
    "some_bytes": b"\x00\xff",
    "a_list": ["a", "b"],
    "a_bool": True,
    "a_float": 0.5,
    "a_decimal": Decimal("1.25"),
    "an_enum": Kind.one,
}


@pytest.mark.parametrize("name", sorted(VALUES))
async def test_a_cached_statement_compiles_as_databases_would(db: Database, name: str) -> None:
    sql = f"SELECT :{name} AS first, :an_int AS second, :{name} AS again"
    values = {name: VALUES[name], "an_int": 3}
    async with db.connection() as connection:
        backend = connection._connection
        expected = backend._compile(text(sql).bindparams(**values))  # databases' own path
        for _ in range(2):  # compiled, then from the cache
            assert backend._compile(statements._Statement(sql, values)) == expected


async def test_values_of_other_types_compile_apart(db: Database) -> None:
    sql = "SELECT CAST(:value AS text) AS value"
    for value in (None, "text", None, "again"):  # None binds as NULL's type, a str as a string
        assert await db.fetch_val(sql, {"value": value}) == (None if value is None else str(value))


async def test_every_value_arrives_as_sent(db: Database) -> None:
    row = await db.fetch_one(
        "SELECT CAST(:a_uuid AS uuid) AS a_uuid, CAST(:a_time AS timestamptz) AS a_time,"
        " CAST(:some_bytes AS bytea) AS some_bytes, CAST(:a_list AS text[]) AS a_list,"
        " CAST(:a_decimal AS numeric) AS a_decimal, CAST(:an_enum AS text) AS an_enum",
        {name: VALUES[name] for name in ("a_uuid", "a_time", "some_bytes", "a_list", "a_decimal", "an_enum")},
    )
    assert row is not None
    assert dict(row._mapping) == {
        "a_uuid": VALUES["a_uuid"],
        "a_time": VALUES["a_time"],
        "some_bytes": VALUES["some_bytes"],
        "a_list": VALUES["a_list"],
        "a_decimal": VALUES["a_decimal"],
        "an_enum": "one",
    }


async def test_the_request_path_uses_the_cache(app: FastAPI, authorized_client: AsyncClient) -> None:
    assert (await authorized_client.get(app.url_path_for("users:get-current-user"))).status_code == status.HTTP_200_OK
    assert any(key[0] == GET_SESSION_USER_QUERY for key in statements._cache)
