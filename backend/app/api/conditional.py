"""Conditional requests (RFC 9110, section 13): the ETag and If-None-Match of the hot read routes.

The feed, a cleaning, the offers of a cleaning and the caller's cleanings answer with a strong
`ETag`, computed by the statement that reads the answer (app/db/etags.py). A client that sends it
back in `If-None-Match` gets `304 Not Modified`, with the tag and no body, while the answer is the
same: the poll cost one statement, and no JSON was written. Their `Cache-Control` is
`private, no-cache`: no shared cache keeps a user's answer, and a browser that keeps one asks again
each time, sending the tag itself.
"""

import re
from typing import Any

from fastapi import Request, Response, status

from app.db.etags import Tagged

CACHE_CONTROL = "private, no-cache"

# One element of If-None-Match's list (RFC 9110, 8.8.3): an entity tag, weak or not, or nothing
# (a list may have empty elements), then a comma or the end. The whitespace after the tag is only
# read after a tag, so that no run of spaces can be split two ways (no backtracking to speak of).
_ELEMENT = re.compile(r'[ \t]*(?:(?:W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*)?(?:,|\Z)')
# A tag this service could have made: MD5 hex. Any other tag matches nothing, so it is dropped.
_OUR_TAG = re.compile(r"[0-9a-f]{32}")
# A client keeps one or two copies; a longer list is cut, so the statement's values stay small
# (a tag past the cut counts as not matching: the answer is sent in full, never a wrong 304).
MAX_TAGS = 16


def if_none_match(request: Request) -> str:
    """The request's If-None-Match as the statements take it: `*`, or the tags it lists that this
    service could have made, comma-separated; "" when it has none. A header that is not a list of
    entity tags (nor `*`) is ignored, and the answer is sent in full. A weak tag (W/"...")
    compares as its strong self, as If-None-Match requires."""
    values = request.headers.getlist("if-none-match")
    if not values:
        return ""
    value = ",".join(values)
    if value.strip(" \t") == "*":
        return "*"
    tags: list[str] = []
    position = 0
    while position < len(value):
        element = _ELEMENT.match(value, position)
        if element is None or element.end() == position:
            return ""  # malformed: as if it had not been sent
        tag = element.group(1)
        if tag is not None and _OUR_TAG.fullmatch(tag) and len(tags) < MAX_TAGS:
            tags.append(tag)
        position = element.end()
    return ",".join(tags)


def tagged_response(answer: Tagged) -> Response:
    """200 with the answer's JSON, or 304 with no body when the client's copy is current; both
    with the tag."""
    headers = {"ETag": f'"{answer.etag}"', "Cache-Control": CACHE_CONTROL}
    if answer.body is None:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content=answer.body, media_type="application/json", headers=headers)


# For the OpenAPI document: the 200's headers and the 304, merged into a route's `responses`.
CONDITIONAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "ETag": {"description": "The answer's tag: send it back in If-None-Match.", "schema": {"type": "string"}},
            "Cache-Control": {"schema": {"type": "string"}},
        }
    },
    304: {
        "description": "Not Modified: If-None-Match names the answer's current tag. No body.",
        "headers": {"ETag": {"schema": {"type": "string"}}},
    },
}
