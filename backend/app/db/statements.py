"""Each SQL statement compiled once per process, underneath `databases`.

The repositories send raw SQL strings through `databases` (the tutorial's architecture). For every
call, `databases` wraps the string in SQLAlchemy's `text()`, binds the values and compiles the
result for asyncpg: about 150 µs of CPU for the statement that loads a request's user, as much as
the rest of an authenticated request's work in Python. Yet the outcome depends only on the
statement's text and the names and Python types of its values, so it is kept, per process, after
the first call: later calls only turn the values into asyncpg's arguments, through the same bind
processors SQLAlchemy chose. Everything else (`databases`' connections, transactions, records and
its query log) is untouched; statements that are not strings take the usual path.
"""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from databases.backends import postgres
from databases.core import LOG_EXTRA, Connection
from sqlalchemy import text
from sqlalchemy.sql import ClauseElement

# The repositories have a few dozen statements, each with one or two sets of value types.
MAX_CACHED_STATEMENTS = 1024


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str  # with asyncpg's $1, $2, ...
    message: str  # the statement on one line, for the query log
    names: tuple[str, ...]  # the values' names in the order of their $n
    processors: tuple[Callable[[Any], Any] | None, ...]
    result_columns: Any


class _Statement:
    """A raw SQL string and its values, on their way from `databases` to the backend's compiler."""

    __slots__ = ("key", "sql", "values")

    def __init__(self, sql: str, values: Mapping[str, Any] | None) -> None:
        self.sql, self.values = sql, values or {}
        self.key = (sql, tuple((name, type(value)) for name, value in sorted(self.values.items())))

    def clause(self) -> ClauseElement:
        clause = text(self.sql)
        return clause.bindparams(**self.values) if self.values else clause


_cache: dict[tuple[str, tuple[tuple[str, type], ...]], _Compiled] = {}
_installed = False


def _compile_once(statement: _Statement, compile_clause: Callable[[ClauseElement], Any]) -> _Compiled:
    compiled = _cache.get(statement.key)
    if compiled is None:
        # What databases' own compiler does, keeping what does not depend on the values.
        result = compile_clause(statement.clause())
        names = tuple(sorted(result.params))
        mapping = {name: f"${number}" for number, name in enumerate(names, start=1)}
        processors = result._bind_processors
        compiled = _Compiled(
            sql=result.string % mapping,
            message=(result.string % mapping).replace(" \n", " ").replace("\n", " "),
            names=names,
            processors=tuple(processors.get(name) for name in names),
            result_columns=result._result_columns,
        )
        if len(_cache) < MAX_CACHED_STATEMENTS:
            _cache[statement.key] = compiled
    return compiled


def _compiled_with_arguments(dialect: Any, statement: _Statement) -> tuple[_Compiled, list[Any]]:
    compiled = _compile_once(
        statement,
        lambda clause: clause.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}),
    )
    args = [
        value if processor is None else processor(value)
        for processor, value in zip(
            compiled.processors, (statement.values[name] for name in compiled.names), strict=True
        )
    ]
    if postgres.logger.isEnabledFor(logging.DEBUG):  # databases' query log, as it writes it
        postgres.logger.debug("Query: %s Args: %s", compiled.message, repr(tuple(args)), extra=LOG_EXTRA)
    return compiled, args


def positional(dialect: Any, sql: str, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """`sql` with asyncpg's `$1, $2, ...` and the arguments for them, exactly as `databases` would
    send them (compiled once per process, written to its query log): for a statement that a hot
    path sends to the asyncpg connection itself (app/db/lone_queries.py: `fetch_row`)."""
    compiled, args = _compiled_with_arguments(dialect, _Statement(sql, values))
    return compiled.sql, args


def install() -> None:
    """Route `databases`' string statements through the cache (once per process)."""
    global _installed
    if _installed:
        return
    build_query = Connection._build_query
    compile_query = postgres.PostgresConnection._compile

    def _build_query(query: Any, values: dict[str, Any] | None = None) -> Any:
        if isinstance(query, str):
            return _Statement(query, values)
        return build_query(query, values)

    def _compile(self: postgres.PostgresConnection, query: Any) -> tuple[str, list[Any], Any]:
        if not isinstance(query, _Statement):
            return compile_query(self, query)
        compiled, args = _compiled_with_arguments(self._dialect, query)
        return compiled.sql, args, compiled.result_columns

    Connection._build_query = staticmethod(_build_query)  # type: ignore[method-assign]
    postgres.PostgresConnection._compile = _compile  # type: ignore[method-assign]
    _installed = True
