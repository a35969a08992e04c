import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from databases import DatabaseURL
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline
from opentelemetry import _logs, metrics, trace

from app.api.errors import (
    client_gone_handler,
    database_unavailable_handler,
    hashing_busy_handler,
    method_not_allowed_handler,
    request_validation_exception_handler,
)
from app.api.metrics import install_metrics
from app.api.middleware import AnyOrigin, LimitRequestBodySize, OneConnectionPerRead, PlainStartupErrors
from app.api.openapi import check_operation_ids, operation_id, use_named_body_schemas
from app.api.perimeter import AllowedHosts, SecurityHeaders, TrustedProxies
from app.api.request_id import RequestIds
from app.api.routes import include_api
from app.core import config
from app.core.logging import configure_logging
from app.db import tasks
from app.db.embedded import release_embedded_database
from app.db.errors import DATABASE_UNAVAILABLE_ERRORS
from app.db.repositories.mfa import MfaRepository
from app.db.repositories.rate_limits import RateLimitsRepository
from app.services.hashing import ClientGoneError, HashingBusyError
from app.services.mail import MailSender

logger = logging.getLogger(__name__)

API_DESCRIPTION = """
Phresh: people post requests to have their home cleaned; others offer to do the work.

To try the locked routes here: register with **POST /api/users/**, then press **Authorize** and
log in with that email (or username) and password. Every error answers `{"detail": ...}`.
"""

# Counted attempts older than every window are of no further use.
PURGE_EVERY_SECONDS = 600


async def purge_rate_limit_hits(app: FastAPI) -> None:
    older_than = max(config.LOGIN_FAILURE_WINDOW_SECONDS, config.REGISTER_WINDOW_SECONDS)
    while True:
        try:
            await RateLimitsRepository(app.state._db).purge(older_than_seconds=older_than)
            await MfaRepository(app.state._db).purge_challenges()  # logins' second steps, a day expired
        except Exception as exc:  # housekeeping: never let it take the server down
            logger.warning("could not purge old rate-limit counts: %s", exc)
        await asyncio.sleep(PURGE_EVERY_SECONDS)


# What OpenTelemetry's API hands out until a provider is set (in code, or by OTEL_PYTHON_*_PROVIDER).
UNSET_TELEMETRY_PROVIDERS = frozenset({"ProxyTracerProvider", "_ProxyMeterProvider", "ProxyLoggerProvider"})


def native_telemetry() -> TelemetryConfig | None:
    """FastAPI's own OpenTelemetry: as FastAPI has it (None) where it has somewhere to report to,
    else off.

    FastAPI asks OpenTelemetry on every request whether a tracer, meter or logger provider has been
    set, and each answer looks in the process environment: about 5 µs of every request
    (docs/performance.md), for a service that reports through /metrics. Asked once here instead,
    as the app is built: a provider set by then (opentelemetry-instrument sets its own before it
    imports the app) or FastAPI's automatic configuration (FASTAPI_OTEL_AUTO_CONFIGURE) keeps it on.
    """
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return None
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(), _logs.get_logger_provider())
    if any(type(provider).__name__ not in UNSET_TELEMETRY_PROVIDERS for provider in providers):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


def get_application(*, database_url: DatabaseURL | None = None) -> FastAPI:
    """Build the app; `database_url` defaults to the configured one (tests pass their own)."""
    url = database_url or config.DATABASE_URL
    configure_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await tasks.connect_to_db(app, url)
        purger = asyncio.create_task(purge_rate_limit_hits(app))
        app.state.mail_sender = MailSender(app.state._db)
        app.state.mail_sender.start()
        # What start-up made (modules, classes, schemas: ~140,000 objects) lives as long as the
        # process: out of the cyclic collector's way. Each of its full passes over them stopped the
        # event loop for ~90 ms, every few thousand requests: that was /me's p99.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.mail_sender.stop()
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            try:
                await tasks.close_db_connection(app)
            finally:
                if database_url is None:
                    # The configured database may be the embedded one, held by this process.
                    release_embedded_database()

    # Swagger UI (/docs) and ReDoc (/redoc) from assets installed with the project: FastAPI's own
    # pages load them from a CDN, and show a blank page on a machine without internet access.
    app = FastAPIOffline(
        title=config.PROJECT_NAME,
        version=config.VERSION,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_parameters={"tryItOutEnabled": True},
        # Names in generated clients: each operation's id is its route's name (app/api/openapi.py).
        generate_unique_id_function=operation_id,
        telemetry=native_telemetry(),
    )
    use_named_body_schemas(app)
    app.add_middleware(OneConnectionPerRead)  # innermost: it gives the connection back as the answer starts
    app.add_middleware(LimitRequestBodySize, max_bytes=config.MAX_REQUEST_BODY_BYTES)
    # CORS, outside the body limit so that a page can read a 413 too. Tokens travel in the
    # Authorization header, never in cookies, so any origin may call the API.
    app.add_middleware(AnyOrigin)
    # Metrics (with METRICS_TOKEN set): outside the body limit and CORS, so that it counts their
    # answers too; inside the request ids, whose 500 for an unhandled error it counts as the error.
    install_metrics(app)
    app.add_middleware(PlainStartupErrors)
    # Before routing, whose trailing-slash redirect names the request's Host (app/api/perimeter.py).
    app.add_middleware(AllowedHosts, hosts=config.ALLOWED_HOSTS)
    # Outermost: every answer (a 413, a preflight, a 500) carries X-Request-ID, every log line of
    # the request its id; it answers an unhandled error itself, and writes the access line.
    app.add_middleware(RequestIds, access_log=config.ACCESS_LOG)
    # ... outside it only the proxy headers, read before anything (the access line) sees the client,
    # and the security headers, put on every answer, RequestIds' 500 included.
    app.add_middleware(
        TrustedProxies,
        proxies=config.TRUSTED_PROXY_NETWORKS,
        trust_any=config.TRUST_ANY_PROXY,
        address_header=config.CLIENT_ADDRESS_HEADER,
    )
    app.add_middleware(SecurityHeaders, api_prefix=config.API_PREFIX)
    app.add_exception_handler(RequestValidationError, request_validation_exception_handler)
    app.add_exception_handler(405, method_not_allowed_handler)
    app.add_exception_handler(HashingBusyError, hashing_busy_handler)
    app.add_exception_handler(ClientGoneError, client_gone_handler)
    for error in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, database_unavailable_handler)
    docs_routes = list(app.router.routes)  # /openapi.json, /docs, /redoc and their assets
    include_api(app.router, prefix=config.API_PREFIX)  # app.include_router(api_router), flat: see include_flat
    # Each request is matched against the routes in order: the API's first, then the docs' (their
    # paths overlap none of the API's).
    app.router.routes[:] = [*app.router.routes[len(docs_routes) :], *docs_routes]
    check_operation_ids(app.routes)
    return app


app = get_application()
