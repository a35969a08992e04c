"""Every setting of Phresh, read once from the environment and the repository's `.env` file.

The environment wins over `.env`. Names and defaults follow the tutorial; where the tutorial
had none (the database), Phresh falls back to a private PostgreSQL it starts itself.
"""

import ipaddress
import os
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

from databases import DatabaseURL
from starlette.config import Config
from starlette.datastructures import Secret

BACKEND_DIR = Path(__file__).resolve().parents[2]
ENV_FILE = Path(os.environ.get("PHRESH_ENV_FILE", BACKEND_DIR.parent / ".env"))

config = Config(ENV_FILE if ENV_FILE.is_file() else None)

PROJECT_NAME = "phresh"
VERSION = "1.0.0"
API_PREFIX = "/api"

# The value `.env.example` ships with; a server must never run with it.
SECRET_KEY_PLACEHOLDER = "CHANGEME-generate-with-openssl-rand-hex-32"  # refused at start-up
SECRET_KEY_MIN_BYTES = 32


def _exit(message: str) -> NoReturn:
    # One line on stderr and a non-zero exit, instead of a traceback a newcomer has to decode.
    raise SystemExit(f"phresh: {message}")


def _checked_key(name: str, value: str | None) -> Secret:
    how = f"generate one with `openssl rand -hex 32` and put it in .env as {name}=<key>"
    if not value:
        _exit(f"{name} is not set: {how}")
    if value == SECRET_KEY_PLACEHOLDER:
        _exit(f"{name} is still the placeholder from .env.example: {how}")
    if len(value.encode()) < SECRET_KEY_MIN_BYTES:
        _exit(f"{name} is shorter than {SECRET_KEY_MIN_BYTES} bytes: {how}")
    return Secret(value)


SECRET_KEY = _checked_key("SECRET_KEY", config("SECRET_KEY", default=None))
# Keys that signed tokens before a rotation: still accepted when verifying, never used to sign.
SECRET_KEY_PREVIOUS: tuple[Secret, ...] = tuple(
    _checked_key("SECRET_KEY_PREVIOUS", key.strip())
    for key in config("SECRET_KEY_PREVIOUS", default="").split(",")
    if key.strip()
)

# An hour (the tutorial's was a week): with refresh tokens, a client gets a new one when it needs
# it, and an access token that leaks is good for an hour at most. Clients that ignore refresh tokens
# (the tutorial's) log in again each hour, or set this back to 10080 (still ended by a logout).
ACCESS_TOKEN_EXPIRE_MINUTES = config("ACCESS_TOKEN_EXPIRE_MINUTES", cast=int, default=60)
# Sessions: every login (and registration) starts one, and every access token names its session,
# checked on every request. A session ends after SESSION_LIFETIME_MINUTES whatever happens, or
# after SESSION_IDLE_TIMEOUT_MINUTES without a request or a refresh; an access token never
# outlives its session. A refresh token presented a second time ends its whole session, except
# within REFRESH_REUSE_GRACE_SECONDS of its first use (two tabs refreshing at once).
SESSION_LIFETIME_MINUTES = config("SESSION_LIFETIME_MINUTES", cast=int, default=30 * 24 * 60)  # 30 days
SESSION_IDLE_TIMEOUT_MINUTES = config("SESSION_IDLE_TIMEOUT_MINUTES", cast=int, default=7 * 24 * 60)  # a week
REFRESH_REUSE_GRACE_SECONDS = config("REFRESH_REUSE_GRACE_SECONDS", cast=int, default=10)
# Past this many live sessions, a new login ends the user's least recently used one.
SESSIONS_MAX_PER_USER = config("SESSIONS_MAX_PER_USER", cast=int, default=100)
for _name, _value, _least in (
    ("SESSION_LIFETIME_MINUTES", SESSION_LIFETIME_MINUTES, 5),
    ("SESSION_IDLE_TIMEOUT_MINUTES", SESSION_IDLE_TIMEOUT_MINUTES, 5),
    ("REFRESH_REUSE_GRACE_SECONDS", REFRESH_REUSE_GRACE_SECONDS, 0),
    ("SESSIONS_MAX_PER_USER", SESSIONS_MAX_PER_USER, 1),
):
    if _value < _least:
        _exit(f"{_name} must be at least {_least}, not {_value}")

JWT_ALGORITHM = config("JWT_ALGORITHM", cast=str, default="HS256")
JWT_AUDIENCE = config("JWT_AUDIENCE", cast=str, default="phresh:auth")
JWT_TOKEN_PREFIX = config("JWT_TOKEN_PREFIX", cast=str, default="Bearer")
# Clock skew tolerated between hosts, for `exp` and for an `iat` in the future.
JWT_LEEWAY_SECONDS = config("JWT_LEEWAY_SECONDS", cast=int, default=10)

# log2 of bcrypt's work factor. 12 costs about 0.2 s of CPU per hash; tests use 4.
BCRYPT_ROUNDS = config("BCRYPT_ROUNDS", cast=int, default=12)
if not 4 <= BCRYPT_ROUNDS <= 31:
    _exit(f"BCRYPT_ROUNDS must be between 4 and 31, not {BCRYPT_ROUNDS}")

# Brute force: failed logins are counted in PostgreSQL, per account and per client address, in a
# sliding window; past a limit, login answers 429. Per-address limits sit well above per-account
# ones, so that an office behind one address is not locked out by a few typos.
LOGIN_MAX_FAILURES_PER_ACCOUNT = config("LOGIN_MAX_FAILURES_PER_ACCOUNT", cast=int, default=5)
LOGIN_MAX_FAILURES_PER_ADDRESS = config("LOGIN_MAX_FAILURES_PER_ADDRESS", cast=int, default=50)
LOGIN_FAILURE_WINDOW_SECONDS = config("LOGIN_FAILURE_WINDOW_SECONDS", cast=int, default=15 * 60)
# Refresh tokens that match no live session, per client address (counted in the login window).
REFRESH_MAX_FAILURES_PER_ADDRESS = config("REFRESH_MAX_FAILURES_PER_ADDRESS", cast=int, default=50)
REGISTER_MAX_PER_ADDRESS = config("REGISTER_MAX_PER_ADDRESS", cast=int, default=30)
REGISTER_WINDOW_SECONDS = config("REGISTER_WINDOW_SECONDS", cast=int, default=60 * 60)

# Mail (email verification, password reset). With SMTP_HOST unset, messages are written as .eml
# files to MAIL_OUTBOX_DIR instead, for a newcomer to read (`python3 backend/manage.py mail`).
SMTP_HOST = config("SMTP_HOST", cast=str, default="")
SMTP_PORT = config("SMTP_PORT", cast=int, default=587)
SMTP_USERNAME = config("SMTP_USERNAME", cast=str, default="")
SMTP_PASSWORD = config("SMTP_PASSWORD", cast=Secret, default="")
# STARTTLS: "auto" (when the server offers it), "true" (required) or "false"; SMTP_TLS: implicit TLS (port 465).
SMTP_STARTTLS = config("SMTP_STARTTLS", cast=str, default="auto").lower()
if SMTP_STARTTLS not in ("auto", "true", "false"):
    _exit(f"SMTP_STARTTLS must be auto, true or false, not {SMTP_STARTTLS}")
SMTP_TLS = config("SMTP_TLS", cast=bool, default=False)
SMTP_TIMEOUT_SECONDS = config("SMTP_TIMEOUT_SECONDS", cast=float, default=20.0)
MAIL_FROM = config("MAIL_FROM", cast=str, default="Phresh <no-reply@phresh.io>")
# The client app the links in mails open: <PUBLIC_APP_URL>/verify-email?token=... and /reset-password?token=...
PUBLIC_APP_URL = config("PUBLIC_APP_URL", cast=str, default="http://localhost:3000").rstrip("/")
MAIL_OUTBOX_DIR = Path(config("MAIL_OUTBOX_DIR", default=str(BACKEND_DIR / ".outbox")))
EMAIL_VERIFICATION_TOKEN_MINUTES = config("EMAIL_VERIFICATION_TOKEN_MINUTES", cast=int, default=24 * 60)
PASSWORD_RESET_TOKEN_MINUTES = config("PASSWORD_RESET_TOKEN_MINUTES", cast=int, default=60)
# Off by default, as in the tutorial: unverified accounts may log in.
LOGIN_REQUIRES_VERIFIED_EMAIL = config("LOGIN_REQUIRES_VERIFIED_EMAIL", cast=bool, default=False)
# Mails asked for, per hour: verification messages per user, reset messages per email and per address.
VERIFICATION_MAX_PER_USER = config("VERIFICATION_MAX_PER_USER", cast=int, default=5)
PASSWORD_RESET_MAX_PER_EMAIL = config("PASSWORD_RESET_MAX_PER_EMAIL", cast=int, default=3)
PASSWORD_RESET_MAX_PER_ADDRESS = config("PASSWORD_RESET_MAX_PER_ADDRESS", cast=int, default=20)
MAIL_LIMIT_WINDOW_SECONDS = config("MAIL_LIMIT_WINDOW_SECONDS", cast=int, default=60 * 60)
# The sender: a send that failed for a while (a 4xx reply, a dropped connection) is tried again
# after MAIL_RETRY_BASE_SECONDS, doubling up to MAIL_RETRY_MAX_SECONDS, until the message's max age
# (below). A worker holds a message it is sending for MAIL_CLAIM_SECONDS (more than a send can
# take); a worker that died meanwhile lets it go then.
MAIL_RETRY_BASE_SECONDS = config("MAIL_RETRY_BASE_SECONDS", cast=float, default=5.0)
MAIL_RETRY_MAX_SECONDS = config("MAIL_RETRY_MAX_SECONDS", cast=float, default=600.0)
MAIL_CLAIM_SECONDS = config("MAIL_CLAIM_SECONDS", cast=float, default=max(60.0, 3 * SMTP_TIMEOUT_SECONDS))
if MAIL_CLAIM_SECONDS <= SMTP_TIMEOUT_SECONDS:
    _exit("MAIL_CLAIM_SECONDS must be longer than SMTP_TIMEOUT_SECONDS, or two workers could send one message")
MAIL_POLL_SECONDS = config("MAIL_POLL_SECONDS", cast=float, default=1.0)
# How long a message may wait to be sent (a mail server that greylists, is down, or refuses our
# settings), counted from when it was asked for; past that it is recorded `expired`, never sent late.
# A reset mail is wanted now: past its link's own lifetime the user has asked again or given up, and
# a link to a password reset nobody is waiting for is only a risk. A verification mail can still help
# the next day (the account works meanwhile), for as long as its link would.
PASSWORD_RESET_MAIL_MAX_AGE_MINUTES = config(
    "PASSWORD_RESET_MAIL_MAX_AGE_MINUTES", cast=int, default=PASSWORD_RESET_TOKEN_MINUTES
)
EMAIL_VERIFICATION_MAIL_MAX_AGE_MINUTES = config(
    "EMAIL_VERIFICATION_MAIL_MAX_AGE_MINUTES", cast=int, default=EMAIL_VERIFICATION_TOKEN_MINUTES
)

# Account notices (a password or email changed, the second factor on or off, the account deleted):
# no link or token in them, only what happened and where to get help (SUPPORT_CONTACT: an address or
# a page). They are worth sending late, within NOTICE_MAIL_MAX_AGE_MINUTES.
SUPPORT_CONTACT = config("SUPPORT_CONTACT", cast=str, default=f"{PUBLIC_APP_URL}/help")
NOTICE_MAIL_MAX_AGE_MINUTES = config("NOTICE_MAIL_MAX_AGE_MINUTES", cast=int, default=7 * 24 * 60)

# Mail about offers (docs/api.md, "Notifications"): each user turns each kind on or off, and each
# mail has a one-click unsubscribe (RFC 8058) that mail providers POST to, at PUBLIC_API_URL (the
# API as the internet reaches it; the link in the mail's text opens the client app, PUBLIC_APP_URL).
# A cleaning's owner hears of new offers at most once per OFFER_DIGEST_MINUTES per cleaning (the
# first at once, later ones listed together); an offer mail is worth sending for OFFER_MAIL_MAX_AGE_MINUTES.
PUBLIC_API_URL = config("PUBLIC_API_URL", cast=str, default="http://localhost:8000").rstrip("/")
OFFER_DIGEST_MINUTES = config("OFFER_DIGEST_MINUTES", cast=int, default=15)
OFFER_MAIL_MAX_AGE_MINUTES = config("OFFER_MAIL_MAX_AGE_MINUTES", cast=int, default=24 * 60)
if OFFER_DIGEST_MINUTES < 0 or OFFER_MAIL_MAX_AGE_MINUTES < 1:
    _exit("OFFER_DIGEST_MINUTES must be 0 or more and OFFER_MAIL_MAX_AGE_MINUTES 1 or more")

# Second factor (TOTP, docs/api.md "Two-factor sign-in"). MFA_ISSUER names Phresh in authenticator
# apps. Wrong codes count like failed logins, in the login window: per account (every place a code
# is asked for) and per mfa_token (a login's second step; past it, log in with the password again).
MFA_ISSUER = config("MFA_ISSUER", cast=str, default="Phresh")
MFA_MAX_FAILURES_PER_ACCOUNT = config("MFA_MAX_FAILURES_PER_ACCOUNT", cast=int, default=LOGIN_MAX_FAILURES_PER_ACCOUNT)
MFA_MAX_FAILURES_PER_TOKEN = config("MFA_MAX_FAILURES_PER_TOKEN", cast=int, default=3)

# Shutdown (docs/deployment.md). On SIGTERM a worker stops accepting connections and gives the
# requests in flight up to SHUTDOWN_GRACE_SECONDS to finish (uvicorn's --timeout-graceful-shutdown,
# passed by `manage.py serve` and the image's command); then the mail sender gets up to
# MAIL_STOP_SECONDS to finish the message it is sending (else that message goes back to the queue
# at once), and the pool closes. A stop may take the sum of both: give the orchestrator more.
SHUTDOWN_GRACE_SECONDS = config("SHUTDOWN_GRACE_SECONDS", cast=int, default=20)
MAIL_STOP_SECONDS = config("MAIL_STOP_SECONDS", cast=float, default=5.0)
if SHUTDOWN_GRACE_SECONDS < 0 or MAIL_STOP_SECONDS < 0:
    _exit("SHUTDOWN_GRACE_SECONDS and MAIL_STOP_SECONDS must be 0 or more")

MAX_REQUEST_BODY_BYTES = config("MAX_REQUEST_BODY_BYTES", cast=int, default=1024 * 1024)

# Searching for jobs (GET /api/cleanings/search/, docs/api.md). SEARCH_LANGUAGE is the text search
# configuration (a name in PostgreSQL's pg_ts_config: english, french, simple, ...) that stems the
# cleanings' names and descriptions; it is read when the migration 3f7a9c2e5b14 runs, which stores
# it in the database's `cleaning_search_config()`, and queries are parsed with the same. Changing it
# later takes the steps in docs/configuration.md. SEARCH_RELEVANCE_WINDOW: a search sorted by
# relevance ranks the newest this many matching jobs (so that its cost does not grow with the table).
SEARCH_LANGUAGE = config("SEARCH_LANGUAGE", cast=str, default="english")
if not SEARCH_LANGUAGE.isidentifier() or not SEARCH_LANGUAGE.isascii():
    _exit(f"SEARCH_LANGUAGE must be the name of a text search configuration, such as english, not {SEARCH_LANGUAGE!r}")
SEARCH_RELEVANCE_WINDOW = config("SEARCH_RELEVANCE_WINDOW", cast=int, default=1000)
if not 1 <= SEARCH_RELEVANCE_WINDOW <= 100_000:
    _exit("SEARCH_RELEVANCE_WINDOW must be between 1 and 100000")

# The network's side (app/api/perimeter.py, docs/proxy.md).
# Host names the server answers to (the Host header, port aside); any other gets 400, so that no
# answer (a trailing-slash redirect) points at a host an attacker chose. `*` allows any: only
# behind a proxy that checks the Host itself. The default serves the two-command start, Docker's
# published port and the tutorial's client, all on localhost; the test suite's in-process clients
# call themselves `testserver`.
ALLOWED_HOSTS = tuple(
    name.strip()
    for name in config("ALLOWED_HOSTS", cast=str, default="localhost,127.0.0.1,[::1]").split(",")
    if name.strip()
) + (("testserver",) if config("TESTING", cast=bool, default=False) else ())
# Addresses or networks (10.0.0.0/8) of the reverse proxies in front of the server, or `*` for any
# peer (only when nothing but the proxy can reach the server). From those peers alone, the client's
# address is read from CLIENT_ADDRESS_HEADER (its last entry that is not itself a trusted proxy) and
# the scheme from X-Forwarded-Proto. Unset: no proxy header is believed, the peer is the client.
TRUSTED_PROXIES = tuple(
    entry.strip() for entry in config("TRUSTED_PROXIES", cast=str, default="").split(",") if entry.strip()
)
TRUST_ANY_PROXY = "*" in TRUSTED_PROXIES
try:
    TRUSTED_PROXY_NETWORKS = tuple(
        ipaddress.ip_network(entry, strict=False) for entry in TRUSTED_PROXIES if entry != "*"
    )
except ValueError as exc:
    _exit(f"TRUSTED_PROXIES: {exc} (give addresses or networks, such as 127.0.0.1 or 10.0.0.0/8, or *)")
_client_address_header = config("CLIENT_ADDRESS_HEADER", cast=str, default=None)
if _client_address_header and not TRUSTED_PROXIES:
    # Before TRUSTED_PROXIES, this header was believed from anyone; now from the proxies alone.
    _exit("CLIENT_ADDRESS_HEADER is read only from TRUSTED_PROXIES, which is not set: set it to your proxy's address")
CLIENT_ADDRESS_HEADER = _client_address_header or "X-Forwarded-For"

# Metrics (docs/metrics.md): GET /metrics in the Prometheus text format, for a scraper sending
# `Authorization: Bearer <METRICS_TOKEN>`. Unset: no /metrics at all (404) and nothing counted per request.
METRICS_TOKEN = config("METRICS_TOKEN", cast=Secret, default="")
METRICS_TOKEN_MIN_BYTES = 16
if METRICS_TOKEN and len(str(METRICS_TOKEN).encode()) < METRICS_TOKEN_MIN_BYTES:
    _exit(f"METRICS_TOKEN is shorter than {METRICS_TOKEN_MIN_BYTES} bytes: generate one with `openssl rand -hex 32`")

# Password hashing runs in a pool of threads (bcrypt releases the GIL), off the event loop. A
# register/login/password change is admitted while the wait it would have for a thread (the hashing
# ahead of it / the threads, at the measured pace) is within HASH_MAX_WAIT_SECONDS, and answered 503
# with Retry-After when its wait would go beyond: an answered one waits at most that plus one hash.
HASH_POOL_SIZE = config("HASH_POOL_SIZE", cast=int, default=os.cpu_count() or 1)
HASH_MAX_WAIT_SECONDS = config("HASH_MAX_WAIT_SECONDS", cast=float, default=2.0)
if HASH_POOL_SIZE < 1 or not 0 < HASH_MAX_WAIT_SECONDS < 3600:
    _exit(
        f"HASH_POOL_SIZE must be 1 or more and HASH_MAX_WAIT_SECONDS between 0 and 3600 seconds, "
        f"not {HASH_POOL_SIZE} and {HASH_MAX_WAIT_SECONDS}"
    )

# Connections each worker process keeps to PostgreSQL. Size workers x DB_POOL_MAX_SIZE below the
# server's max_connections. Behind PgBouncer in transaction mode, set DB_STATEMENT_CACHE_SIZE=0.
DB_POOL_MIN_SIZE = config("DB_POOL_MIN_SIZE", cast=int, default=2)
DB_POOL_MAX_SIZE = config("DB_POOL_MAX_SIZE", cast=int, default=10)
DB_STATEMENT_CACHE_SIZE = config("DB_STATEMENT_CACHE_SIZE", cast=int, default=100)

# How long start-up keeps retrying an unreachable database before it gives up.
DB_CONNECT_TIMEOUT_SECONDS = config("DB_CONNECT_TIMEOUT_SECONDS", cast=float, default=30.0)

# Logs (docs/logging.md): `text` for people, `json` (one object per line) for a log collector.
# Every line a request causes carries its request id; ACCESS_LOG writes one line per request
# (uvicorn's own access log is switched off: it knows neither the route nor the user).
LOG_FORMAT = config("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    _exit(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOG_LEVEL = config("LOG_LEVEL", default="INFO").upper()
ACCESS_LOG = config("ACCESS_LOG", cast=bool, default=True)

# Where the private PostgreSQL keeps its data when no database is configured.
EMBEDDED_DB_DIR = Path(config("EMBEDDED_DB_DIR", default=str(BACKEND_DIR / ".pgdata")))
EMBEDDED_DB_NAME = "phresh"

_POSTGRES_VARS = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_SERVER", "POSTGRES_PORT", "POSTGRES_DB")


def _database_url() -> DatabaseURL:
    url = config("DATABASE_URL", default=None)
    if url:
        return DatabaseURL(url)
    if any(config(name, default=None) for name in _POSTGRES_VARS):
        user = quote(config("POSTGRES_USER", default="postgres"), safe="")
        password = quote(str(config("POSTGRES_PASSWORD", cast=Secret, default="")), safe="")
        server = config("POSTGRES_SERVER", default="db")
        port = config("POSTGRES_PORT", default="5432")
        database = config("POSTGRES_DB", default=EMBEDDED_DB_NAME)
        return DatabaseURL(f"postgresql://{user}:{password}@{server}:{port}/{database}")
    # Imported here so that a configured deployment never loads the embedded server.
    from app.db.embedded import start_embedded_database

    return DatabaseURL(start_embedded_database(data_dir=EMBEDDED_DB_DIR, database=EMBEDDED_DB_NAME))


# The tutorial's switch (Part 4): with TESTING set, everything runs on `<database>_test`, a sibling
# of the configured database, so that tests never touch development data.
TESTING = config("TESTING", cast=bool, default=False)

DATABASE_URL = _database_url()
if TESTING:
    # The path is replaced, not appended to: the URL may end in a query (?host=/socket/dir).
    DATABASE_URL = DATABASE_URL.replace(database=f"{DATABASE_URL.database}_test")
