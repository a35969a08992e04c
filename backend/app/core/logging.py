"""How Phresh logs: one handler, text or JSON (LOG_FORMAT), every line a request causes carrying its id.

The request's facts live in a context variable (`RequestContext`), set by the request-id middleware
(app/api/request_id.py). A log record factory copies them onto every record as it is made, so any
logger (the app's, the database driver's, uvicorn's) and any handler (pytest's caplog too) sees
`record.request_id`, `record.route`, ... Tasks a request spawns copy its context, and so its id;
tasks started at start-up (the mail sender) have none. docs/logging.md describes the fields.
"""

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from app.core import config


@dataclass(slots=True)
class RequestContext:
    """What is known of the request being served; filled in as it goes (one object, shared by the
    tasks the request spawns, so that the user the auth dependency finds is seen by the middleware)."""

    request_id: str
    method: str
    route: str | None = None
    status: int | None = None
    duration: float | None = None
    user_id: int | None = None


_current_request: ContextVar[RequestContext | None] = ContextVar("phresh_request", default=None)

# The attributes every record gets, in the order the JSON format writes them after the basics.
CONTEXT_FIELDS = ("request_id", "route", "method", "status", "duration", "user_id")


def current_request() -> RequestContext | None:
    return _current_request.get()


def current_request_id() -> str | None:
    request = _current_request.get()
    return request.request_id if request is not None else None


def start_request(request: RequestContext) -> object:
    """Make `request` the current one; returns the token `end_request` needs."""
    return _current_request.set(request)


def end_request(token: object) -> None:
    _current_request.reset(token)  # type: ignore[arg-type]


def set_current_user(user_id: int) -> None:
    """The auth dependency found the request's user: later lines (and the access line) name them."""
    request = _current_request.get()
    if request is not None:
        request.user_id = user_id


class HideQueryArguments(logging.Filter):
    """`databases` logs every query with its arguments at DEBUG, and those include password
    hashes and salts. Keep the statement, drop the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 2 and str(record.msg).startswith("Query:"):
            record.args = (record.args[0], "(hidden)")
        return True


_base_factory = logging.getLogRecordFactory()


def _record_with_request(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    request = _current_request.get()
    if request is None:
        for field in CONTEXT_FIELDS:
            setattr(record, field, None)
    else:
        record.request_id = request.request_id
        record.method = request.method
        record.route = request.route
        record.status = request.status
        record.duration = request.duration
        record.user_id = request.user_id
    return record


class TextFormatter(logging.Formatter):
    """`2026-12-05 10:00:00,123 INFO app.services.mail [req=3f2a...] the message`; `[req=-]` outside a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [req=%(request_id_or_dash)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.request_id_or_dash = getattr(record, "request_id", None) or "-"
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, the request's
    fields (null where unknown) and, for an error, its traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            line[field] = getattr(record, field, None)
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            line["exception"] = record.exc_text
        # default=str: a message argument that JSON cannot hold is written as its text, never dropped.
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


class _PhreshHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler Phresh installs on the root logger (found again by its class, never doubled).

    It writes to whatever `sys.stderr` is at the time, as Python's last-resort handler does: a
    stream kept from start-up may be closed by the time a line comes (pytest's capture, at exit).
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # not StreamHandler's, which would keep a stream

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def configure_logging(*, log_format: str | None = None) -> None:
    """Set up logging once per process; calling it again (each app a test builds) changes nothing
    but the format. uvicorn has configured its own loggers before it imports the app: their lines
    are sent up to the root logger here, so they come out in the same format with the same fields."""
    if logging.getLogRecordFactory() is not _record_with_request:
        logging.setLogRecordFactory(_record_with_request)

    databases_logger = logging.getLogger("databases")
    if not any(isinstance(f, HideQueryArguments) for f in databases_logger.filters):
        databases_logger.addFilter(HideQueryArguments())

    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _PhreshHandler)), None)
    if handler is None:
        handler = _PhreshHandler()
        root.addHandler(handler)
        root.setLevel(config.LOG_LEVEL)
    handler.setFormatter(formatter_for(log_format or config.LOG_FORMAT))
    # Python's warnings too, so that in JSON every line of the output is one object.
    logging.captureWarnings(True)

    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True
    # Phresh writes its own access line (app/api/request_id.py). Without handlers, uvicorn's
    # protocol skips its access log altogether, exactly as with --no-access-log.
    access_logger = logging.getLogger("uvicorn.access")
    access_logger.handlers = []
    access_logger.propagate = False
