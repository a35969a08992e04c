"""Every setting of Phresh, read once from the environment and the repository's `.env` file.

The environment wins over `.env`. Names and defaults follow the tutorial; where the tutorial
had none (the database), Phresh falls back to a private PostgreSQL it starts itself.
"""

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


def _secret_key() -> Secret:
    value = config("SECRET_KEY", default=None)
    how = "generate one with `openssl rand -hex 32` and put it in .env as SECRET_KEY=<key>"
    if not value:
        _exit(f"SECRET_KEY is not set: {how}")
    if value == SECRET_KEY_PLACEHOLDER:
        _exit(f"SECRET_KEY is still the placeholder from .env.example: {how}")
    if len(value.encode()) < SECRET_KEY_MIN_BYTES:
        _exit(f"SECRET_KEY is shorter than {SECRET_KEY_MIN_BYTES} bytes: {how}")
    return Secret(value)


SECRET_KEY = _secret_key()

ACCESS_TOKEN_EXPIRE_MINUTES = config(
    "ACCESS_TOKEN_EXPIRE_MINUTES",
    cast=int,
    default=7 * 24 * 60,  # one week
)
JWT_ALGORITHM = config("JWT_ALGORITHM", cast=str, default="HS256")
JWT_AUDIENCE = config("JWT_AUDIENCE", cast=str, default="phresh:auth")
JWT_TOKEN_PREFIX = config("JWT_TOKEN_PREFIX", cast=str, default="Bearer")

# log2 of bcrypt's work factor. 12 costs about 0.2 s of CPU per hash; tests use 4.
BCRYPT_ROUNDS = config("BCRYPT_ROUNDS", cast=int, default=12)
if not 4 <= BCRYPT_ROUNDS <= 31:
    _exit(f"BCRYPT_ROUNDS must be between 4 and 31, not {BCRYPT_ROUNDS}")

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


DATABASE_URL = _database_url()
