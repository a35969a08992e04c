"""What the service shows to the network, and what it believes of it: plain ASGI middleware.

- `SecurityHeaders`: the headers a scanner (and a browser) expects, on every answer.
- `AllowedHosts`: a request must name one of the server's own host names, or it gets 400.
- `TrustedProxies`: the client's address and scheme come from proxy headers only when the peer that
  connected is one of the operator's proxies. (uvicorn's own `--proxy-headers` is switched off where
  Phresh starts uvicorn: it believes any peer on 127.0.0.1 or ::1.)

See docs/proxy.md for what stands in front of uvicorn in production.
"""

import ipaddress
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Header = tuple[bytes, bytes]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SecurityHeaders:
    """Add the security headers to every answer that passes through, whatever made it.

    Everything: no MIME sniffing, no framing by another page (both the old header and CSP's), no
    Referer sent when a page here links elsewhere. Under the API's prefix, also `no-store` (answers
    are personal, or depend on who asks, and none is worth a shared cache's risk) and a CSP that
    allows nothing at all, since a JSON answer opened in a browser needs nothing. /docs, /redoc and
    their static assets keep their caching, and Swagger UI's inline script still runs. An answer
    that sets its own Cache-Control keeps it (the conditional routes' `private, no-cache`:
    app/api/conditional.py).
    """

    EVERYWHERE: tuple[Header, ...] = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    )
    FRAME_ANCESTORS = (b"content-security-policy", b"frame-ancestors 'none'")
    API_ONLY: tuple[Header, ...] = (
        (b"cache-control", b"no-store"),
        (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    )

    def __init__(self, app: ASGIApp, *, api_prefix: str) -> None:
        self.app = app
        # Precomputed: the middleware appends one of two ready lists to each answer.
        self.api_headers = [*self.EVERYWHERE, *self.API_ONLY]
        self.api_headers_but_caching = [header for header in self.api_headers if header[0] != b"cache-control"]
        self.other_headers = [*self.EVERYWHERE, self.FRAME_ANCESTORS]
        self.api_prefix = api_prefix.rstrip("/")

    def headers_for(self, path: str) -> list[Header]:
        if path == self.api_prefix or path.startswith(self.api_prefix + "/"):
            return self.api_headers
        return self.other_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                added = extra
                if extra is self.api_headers and any(name == b"cache-control" for name, _ in headers):
                    added = self.api_headers_but_caching
                message["headers"] = [*headers, *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_name(host_header: bytes) -> bytes:
    """The name in a Host header, without its port: `localhost:8000` -> `localhost`, `[::1]:80` -> `[::1]`."""
    host = host_header.strip().lower()
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1] if b"]" in host else host
    return host.split(b":", 1)[0]


class AllowedHosts:
    """Answer 400 to a request whose Host is not one of `hosts` (`*` among them allows any).

    It runs before routing: the trailing-slash redirect (and anything else that builds a URL from
    the request) would otherwise send a client to whatever host the request named. A request with
    no Host at all (HTTP/1.0) is refused too, unless any host is allowed.
    """

    DETAIL = "The request's Host is not one this server answers to (ALLOWED_HOSTS)."

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str]) -> None:
        self.app = app
        names = {name.strip().lower() for name in hosts if name.strip()}
        self.any_host = "*" in names
        self.hosts = frozenset(name.encode() for name in names)
        body = json.dumps({"detail": self.DETAIL}).encode()
        self.refusal_body = body
        self.refusal_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any_host:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"host":
                if host_name(value) in self.hosts:
                    await self.app(scope, receive, send)
                    return
                break
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 400, "headers": list(self.refusal_headers)})
        await send({"type": "http.response.body", "body": self.refusal_body})


class TrustedProxies:
    """Take the client's address and scheme from a trusted proxy's headers, and from no one else.

    Only when the connecting peer is in `proxies` (or `trust_any`): the address comes from
    `address_header` (X-Forwarded-For by default), read from the right: the proxy appended the
    address it saw, and any entries before it are whatever the client claimed. Entries that are
    themselves trusted proxies (a chain of them) are skipped. The scheme comes from
    X-Forwarded-Proto (http or https only). From any other peer, these headers are ignored.
    The address replaces `scope["client"]`, so every reader (rate limits, the audit, logs) sees it.
    """

    def __init__(
        self, app: ASGIApp, *, proxies: Iterable[IPNetwork], trust_any: bool = False, address_header: str
    ) -> None:
        self.app = app
        self.proxies = tuple(proxies)
        self.trust_any = trust_any
        self.address_header = address_header.strip().lower().encode()
        self.enabled = trust_any or bool(self.proxies)

    def is_trusted(self, address: str) -> bool:
        if self.trust_any:
            return True
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)

    def client_address(self, forwarded: str) -> str | None:
        entries = [entry.strip() for entry in forwarded.split(",") if entry.strip()]
        if not entries:
            return None
        if self.trust_any:
            return entries[-1]  # the one the proxy added: the rest is the client's word
        for entry in reversed(entries):
            if not self.is_trusted(entry):
                return entry
        return entries[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        if peer is None or not self.is_trusted(peer[0]):
            await self.app(scope, receive, send)
            return
        forwarded: list[bytes] = []
        for name, value in scope["headers"]:
            if name == self.address_header:
                forwarded.append(value)
            elif name == b"x-forwarded-proto" and value.strip().lower() in (b"http", b"https"):
                scheme = value.strip().lower().decode()
                scope["scheme"] = scheme if scope["type"] == "http" else scheme.replace("http", "ws")
        if forwarded:
            address = self.client_address(b",".join(forwarded).decode("latin-1"))
            if address:
                scope["client"] = (address, 0)
        await self.app(scope, receive, send)
