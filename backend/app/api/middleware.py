"""Plain ASGI middleware: it sees every request before FastAPI does, and the lifespan messages."""

import json

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import lone_queries
from app.db.errors import DatabaseUnreachableError


class BodyTooLargeError(HTTPException):
    # An HTTPException, so that FastAPI's body parsing passes it on instead of turning it into a 400.
    def __init__(self, max_bytes: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, f"The request body is larger than {max_bytes} bytes.")


class LimitRequestBodySize:
    """Refuse a request body over `max_bytes` with 413, before it is read into memory.

    A declared Content-Length is checked up front; a chunked body is counted as it arrives.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.refuse(send)
            return
        if not chunked:
            # No body, or exactly the declared length of one (the server reads no more than that):
            # nothing to count, so nothing to wrap, on nearly every request.
            await self.app(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLargeError:
            if response_started:
                raise
            await self.refuse(send)

    async def refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"The request body is larger than {self.max_bytes} bytes."}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class AnyOrigin:
    """CORS for an API that any web page may call.

    Tokens travel in the Authorization header, never in cookies, so a page of another origin can
    do nothing with the API that a script of its own could not. Every answer says
    `Access-Control-Allow-Origin: *`, whether the request named an Origin or not, so that no
    answer depends on it (no `Vary: Origin`: caches may share them). A preflight request (OPTIONS
    with Origin and Access-Control-Request-Method) is answered here: any method, the headers the
    browser asks for, remembered by the browser for ten minutes.
    """

    ALLOW_ORIGIN = (b"access-control-allow-origin", b"*")
    PREFLIGHT = (
        ALLOW_ORIGIN,
        (b"access-control-allow-methods", b"DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
        (b"access-control-max-age", b"600"),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"2"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            headers = dict(scope["headers"])
            if b"origin" in headers and b"access-control-request-method" in headers:
                await self.preflight(send, requested_headers=headers.get(b"access-control-request-headers"))
                return

        async def send_allowing_any_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.ALLOW_ORIGIN]
            await send(message)

        await self.app(scope, receive, send_allowing_any_origin)

    async def preflight(self, send: Send, *, requested_headers: bytes | None) -> None:
        headers = list(self.PREFLIGHT)
        if requested_headers is not None:
            headers.append((b"access-control-allow-headers", requested_headers))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"OK"})


class PlainStartupErrors:
    """Turn a start-up failure we can explain (the database is unreachable) into one clear line.

    Starlette reports any start-up exception to the server as a full traceback; for this one the
    traceback says nothing more than its last line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def plain_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                last_line = message.get("message", "").strip().splitlines()[-1:] or [""]
                prefix = f"{DatabaseUnreachableError.__module__}.{DatabaseUnreachableError.__qualname__}: "
                if last_line[0].startswith(prefix):
                    message = {**message, "message": f"phresh: {last_line[0][len(prefix) :]}"}
            await send(message)

        await self.app(scope, receive, plain_send)


class OneConnectionPerRead:
    """A GET (or HEAD) request's statements share one pooled connection (app/db/lone_queries.py),
    given back as soon as its answer starts.

    Only reads: they do nothing but query and compute, so the connection is held only for as long
    as the request works. A write may wait for a hashing thread or a mail server meanwhile, with a
    connection the other requests need.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        async with lone_queries.shared_connection() as shared:

            async def releasing_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await shared.release()
                await send(message)

            await self.app(scope, receive, releasing_send)
