"""Every request gets an id, every answer says it (X-Request-ID), every log line it causes carries it.

The outermost of Phresh's middleware, so that answers made by the others (a 413, a CORS preflight)
carry the id too. It also writes the access line, and answers an unhandled error itself (500, with
the id in the body), logging it once: an error it catches never reaches Starlette's
ServerErrorMiddleware, which would re-raise it for uvicorn to log a second time.
"""

import json
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logging import RequestContext, end_request, start_request

REQUEST_ID_HEADER = "X-Request-ID"
# A client's (or a proxy's) own id is kept if it is 1 to 128 printable ASCII characters without
# spaces, quotes or backslashes: it goes into log lines and an answer's header and body as it is.
SANE_REQUEST_ID = re.compile(r"[!#-&(-\[\]-~]{1,128}")
INTERNAL_SERVER_ERROR = "Internal Server Error"

access_logger = logging.getLogger("phresh.access")
error_logger = logging.getLogger("phresh.errors")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's id (its first X-Request-ID header) if it is sane, else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            sent = value.decode("latin-1")
            if SANE_REQUEST_ID.fullmatch(sent):
                return sent
            break
    # uuid4().hex without building a UUID object (which cost 2 µs of every request): 16 random
    # bytes with the version (4) and variant bits set as RFC 4122 sets them.
    random = bytearray(os.urandom(16))
    random[6] = random[6] & 0x0F | 0x40
    random[8] = random[8] & 0x3F | 0x80
    return random.hex()


def route_template(scope: Scope) -> str | None:
    """The path of the route that answered, as declared (`/api/cleanings/{cleaning_id}/`): never
    the raw path, whose ids and query strings make every line different (and may hold a token)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class RequestIds:
    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = RequestContext(request_id=request_id_from(scope["headers"]), method=scope["method"])
        id_header = (b"x-request-id", request.request_id.encode())
        token = start_request(request)
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                request.status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            request.route = route_template(scope)
            error_logger.exception("unhandled error in %s %s", request.method, request.route or scope["path"])
            if request.status is None:
                await self.internal_server_error(send_with_id, request_id=request.request_id)
            # else the answer had begun: uvicorn closes the connection, and says so in a line of its own.
        finally:
            request.route = route_template(scope)
            request.duration = time.perf_counter() - started
            if self.access_log:
                access_logger.info(
                    "%s %s %s %.3fs", request.method, request.route or "-", request.status, request.duration
                )
            end_request(token)

    @staticmethod
    async def internal_server_error(send: Send, *, request_id: str) -> None:
        body = json.dumps({"detail": INTERNAL_SERVER_ERROR, "request_id": request_id}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})
