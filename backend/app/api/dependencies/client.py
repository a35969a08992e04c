from contextlib import AbstractAsyncContextManager
from typing import Annotated

from fastapi import Depends, Header, Request

from app.services import hashing_pool

MAX_ADDRESS_LENGTH = 64


async def get_client_address(request: Request) -> str:
    """The caller's address, for rate limits and the audit trail.

    The connecting peer's, or the one a trusted proxy forwarded (app/api/perimeter.py:
    TrustedProxies has put it in the request's scope by now). A forwarded one is the proxy's word
    for what it saw, but bounded and printable all the same.
    """
    if request.client is None:
        return "unknown"
    address = "".join(char for char in request.client.host if char.isprintable())
    return address[:MAX_ADDRESS_LENGTH] or "unknown"


ClientAddress = Annotated[str, Depends(get_client_address)]

# Kept with each session, to help its user tell their sessions apart (not in the API's schema).
UserAgent = Annotated[str | None, Header(include_in_schema=False)]


def hashing_place(request: Request) -> AbstractAsyncContextManager[None]:
    """A place in the hashing pool for this request (or 503), dropped if its client goes away.

    Taken before the request's other work, so that a refusal costs no database round trip.
    """

    async def until_disconnected() -> None:
        # The body has been read by now: the next message is the disconnect, whenever it comes
        # (or once the response is complete, by which time the place has been given back).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return hashing_pool.place(client_gone=until_disconnected)
