"""GET /metrics: the Prometheus text exposition, for a scraper holding METRICS_TOKEN.

With METRICS_TOKEN unset (the default) there is no /metrics and no counting middleware: the
path answers 404 like any unknown one, so a deployment that never asked for metrics shows
none. With it set, a request must send `Authorization: Bearer <METRICS_TOKEN>`; any other
answer is 401, never the metrics. The route is left out of the OpenAPI document (it is no part of
the API a client programs against): docs/metrics.md describes it.
"""

import asyncio
import contextlib
import hmac
import time
from collections.abc import Iterable, Iterator

from databases import Database
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.routes.health import MIGRATIONS_HEAD
from app.core import config
from app.core import metrics as m
from app.db import lone_queries
from app.db.errors import DATABASE_UNAVAILABLE_ERRORS
from app.db.repositories.outbox import OutboxRepository
from app.services import hashing_pool

METRICS_PATH = "/metrics"
# How often each worker writes its gauges (requests in flight, hashing, pool) for the others to read.
SAMPLE_SECONDS = 1.0
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Counted:
    """The label children of one (route, method): found once, then reused by every request."""

    __slots__ = ("duration", "statuses")

    def __init__(self, route: str, method: str) -> None:
        self.duration = m.HTTP_REQUEST_DURATION.labels(route, method)
        self.statuses = [m.HTTP_REQUESTS.labels(route, method, status_class) for status_class in m.STATUS_CLASSES]


class CountRequests:
    """Counts every HTTP request by route template, method and status class, and times it.

    Plain ASGI: it reads the status from the answer's start and the matched route from the scope
    (the router writes it there). The label children are cached per (route, method): a request
    costs one dict lookup, a counter and a histogram, no allocation of labels. It also starts, on
    the lifespan's start, the sampler that writes this worker's gauges, and marks the worker dead
    (its live gauges leave the sums) as the lifespan ends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0
        self.counted: dict[tuple[int, str], _Counted] = {}
        self.sampler: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.count(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, receive, self.lifespan_send(scope, send))
        else:
            await self.app(scope, receive, send)

    async def count(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # what the client gets when an error escapes before the answer starts

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, receive, status_send)
        finally:
            self.in_flight -= 1
            route = scope.get("route")
            method = scope["method"]
            key = (id(route), method)  # by identity: routes live as long as the app (and APIRoute is unhashable)
            counted = self.counted.get(key)
            if counted is None:
                template = getattr(route, "path", None) or m.UNMATCHED_ROUTE
                counted = self.counted[key] = _Counted(template, method if method in METHODS else "other")
            counted.statuses[min(max(status // 100, 1), 5) - 1].inc()
            counted.duration.observe(time.perf_counter() - started)

    def lifespan_send(self, scope: Scope, send: Send) -> Send:
        async def watching_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.sampler = asyncio.create_task(self.sample_forever(scope["app"]), name="phresh-metrics-sampler")
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if self.sampler is not None:
                    self.sampler.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self.sampler
                m.mark_this_worker_dead()
            await send(message)

        return watching_send

    def sample(self, app: FastAPI) -> None:
        """Write this worker's gauges."""
        m.HTTP_REQUESTS_IN_FLIGHT.set(self.in_flight)
        m.HASHING_BUSY.set(hashing_pool.pending)
        m.HASHING_WAITING.set(hashing_pool.waiting)
        m.HASHING_EXPECTED_WAIT.set(hashing_pool.expected_wait())
        database: Database | None = getattr(app.state, "_db", None)
        size, in_use, waiting = lone_queries.pool_usage(database) if database is not None else (0, 0, 0)
        m.DB_POOL_CONNECTIONS.set(size)
        m.DB_POOL_CONNECTIONS_IN_USE.set(in_use)
        m.DB_POOL_WAITING.set(waiting)

    async def sample_forever(self, app: FastAPI) -> None:
        while True:
            self.sample(app)
            await asyncio.sleep(SAMPLE_SECONDS)


class ScrapeTimeFacts(Collector):
    """Facts read as the scrape is answered, the same whichever worker answers it: the build, and
    the outbox's due messages (facts of the database, not of a worker, so never summed)."""

    def __init__(self, *, outbox: tuple[int, float] | None) -> None:
        self.outbox = outbox

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "phresh_build_info",
            "The running code: version, git revision and the newest migration it knows (always 1).",
            labels=["version", "revision", "schema_revision"],
        )
        build.add_metric([config.VERSION, m.git_revision(config.BACKEND_DIR), MIGRATIONS_HEAD or "none"], 1)
        yield build
        if self.outbox is None:  # the database did not answer: no value rather than a false 0
            return
        due, oldest_age = self.outbox
        yield GaugeMetricFamily("phresh_outbox_due_messages", "Outbox messages due to be sent now.", value=due)
        yield GaugeMetricFamily(
            "phresh_outbox_oldest_due_age_seconds",
            "Seconds since the oldest due outbox message was asked for (0 when none is due).",
            value=oldest_age,
        )


class _OwnMetrics(Collector):
    def collect(self) -> Iterable[Metric]:
        return m.REGISTRY.collect()


def unauthorized() -> Response:
    return JSONResponse(
        {"detail": "A valid metrics token is required."}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


def token_is_valid(authorization: str | None) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    expected = str(config.METRICS_TOKEN).encode()
    # Compared in constant time: the answer's timing says nothing about how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)


async def scrape(request: Request) -> Response:
    if not token_is_valid(request.headers.get("authorization")):
        return unauthorized()
    app = request.app
    counting: CountRequests | None = getattr(app.state, "metrics_middleware", None)
    if counting is not None:
        counting.sample(app)  # this worker's gauges as they are now
    outbox: tuple[int, float] | None = None
    with contextlib.suppress(*DATABASE_UNAVAILABLE_ERRORS):
        outbox = await OutboxRepository(app.state._db).due_summary()
    registry = CollectorRegistry(auto_describe=False)
    if m.MULTIPROCESS_DIR is not None:
        m.reap_dead_workers()
        MultiProcessCollector(registry, path=m.MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    else:
        registry.register(_OwnMetrics())
    registry.register(ScrapeTimeFacts(outbox=outbox))
    # Reading every worker's files is file IO: off the event loop.
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """With METRICS_TOKEN set: count requests (the middleware added here) and serve /metrics."""
    if not config.METRICS_TOKEN:
        return

    class RememberedCountRequests(CountRequests):
        def __init__(self, inner: ASGIApp) -> None:
            super().__init__(inner)
            app.state.metrics_middleware = self  # the scrape samples its own worker through it

    app.add_middleware(RememberedCountRequests)
    # A FastAPI route (it labels its requests with its template, as the others), out of the OpenAPI document.
    app.add_api_route(METRICS_PATH, scrape, methods=["GET"], name="metrics:scrape", include_in_schema=False)
