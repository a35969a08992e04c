from typing import Annotated

from fastapi import Depends, Header, Request

from app.core.config import CLIENT_ADDRESS_HEADER

MAX_ADDRESS_LENGTH = 64


async def get_client_address(request: Request) -> str:
    """The caller's address, for rate limits and the audit trail.

    Behind a reverse proxy, set CLIENT_ADDRESS_HEADER to the header it sets: the last entry is
    used, the one the proxy added itself (earlier entries are whatever the client claimed).
    """
    if CLIENT_ADDRESS_HEADER:
        forwarded = request.headers.get(CLIENT_ADDRESS_HEADER, "").split(",")[-1].strip()
        forwarded = "".join(char for char in forwarded if char.isprintable())
        if forwarded:
            return forwarded[:MAX_ADDRESS_LENGTH]
    return request.client.host if request.client else "unknown"


ClientAddress = Annotated[str, Depends(get_client_address)]

# Kept with each session, to help its user tell their sessions apart (not in the API's schema).
UserAgent = Annotated[str | None, Header(include_in_schema=False)]
