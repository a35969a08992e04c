"""The ETag of an answer, computed by the very statement that reads it.

A hot read route's statement returns two things: the tag of its answer, and the answer's JSON
(app/db/json_rows.py), written only when the client's copy is not current. The tag is the MD5 of
- a seed: the statement's own text (a release that writes the answer differently changes every
  tag), the caller (no user's tag ever validates another's answer) and the page's parameters;
- and, for every row the answer shows, in the answer's order, its id, its `updated_at` and its row
  version (`xmin`, the transaction that wrote that version of the row: PostgreSQL gives every
  update a new one), for each table the answer embeds: the cleanings, the offers, the users who own
  or make them, and those users' profiles. `updated_at` alone would miss two updates whose
  transactions started in the same microsecond (it is the transaction's start), and `xmin` alone
  could, in theory, come round again after four billion transactions; together they cannot.

So the tag changes whenever the answer would: a row that joins, leaves, moves within the page or
changes, or an embedded owner's account or profile that changes. It may also change when the
answer does not (a user's password change rewrites their row): that costs the client one full
answer, never a stale one. Each row's part is fixed-width bytes (`int4send` and friends), so no
text is formatted for the tag.

`matched` compares the tag with what the client sent (`app.api.conditional.if_none_match`): `*`,
or a comma-separated list of tags; the statement writes NULL instead of the JSON when one matches.
"""

import hashlib
from dataclasses import dataclass
from functools import cache

# The statements' two parameters: the seed, and the client's If-None-Match (app/api/conditional.py).
SEED, IF_NONE_MATCH = ":etag_seed", ":if_none_match"


@dataclass(frozen=True, slots=True)
class Tagged:
    """An answer's tag, and its JSON; None when the client's copy (If-None-Match) is current."""

    etag: str
    body: str | None


def seed(statement: str, *parts: object) -> str:
    """The seed of a tag: the statement's digest, then the caller and the page's parameters."""
    return "|".join([_digest(statement), *(repr(part) for part in parts)])


@cache
def _digest(statement: str) -> str:
    # Once per statement and process: hashing the feed's 6 kB statement took 20 µs a request.
    return hashlib.md5(statement.encode(), usedforsecurity=False).hexdigest()[:16]


def row_key(*, id: str, updated_at: str, version: str) -> str:
    """SQL: a row's id (an integer), `updated_at` and `xmin` as 16 bytes; zeros for a row a LEFT
    JOIN did not find, so that every row of a page has a part of the same width."""
    return (
        f"int4send(COALESCE({id}, 0)) || timestamptz_send(COALESCE({updated_at}, 'epoch'))"
        f" || xidsend(COALESCE({version}, '0'::xid))"
    )


def etag_of_rows(key: str, *, order_by: str) -> str:
    """SQL aggregate: the tag of a page, from its rows' keys in the answer's order."""
    return (
        f"md5(convert_to(CAST({SEED} AS text), 'UTF8')"
        f" || COALESCE(string_agg({key}, ''::bytea ORDER BY {order_by}), ''::bytea))"
    )


def etag_of_row(key: str) -> str:
    """SQL: the tag of an answer that is one row."""
    return f"md5(convert_to(CAST({SEED} AS text), 'UTF8') || {key})"


def matched(etag: str) -> str:
    """SQL condition: the client's copy is current (If-None-Match is `*`, or lists the tag)."""
    return f"(CAST({IF_NONE_MATCH} AS text) = '*' OR {etag} = ANY(string_to_array(CAST({IF_NONE_MATCH} AS text), ',')))"
