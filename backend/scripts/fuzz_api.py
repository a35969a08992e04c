"""Fuzz the live API with schemathesis, from its own OpenAPI document.

    python3 backend/manage.py fuzz [--examples N] [--seed S]

Starts the service on a scratch database (`<database>_fuzz`, on the configured server or the
embedded one), logs in a superuser so that every locked route is exercised with a real token,
gives it a cleaning so that ids lead somewhere, and runs every schemathesis check. Exits non-zero
on any server error or any response that breaks the documented schema.
"""

import argparse
import os
import secrets
import subprocess
import sys

# A scratch server signs with a key of its own: a fresh checkout has no .env, and a developer's
# key has no business here. Set before anything from `app` reads the settings.
os.environ["SECRET_KEY"] = secrets.token_hex(32)

import httpx

from app.core.config import BACKEND_DIR, DATABASE_URL, SECRET_KEY
from app.db.admin import sibling_database
from scripts.live_server import live_server, prepare_database

# Generous limits: the fuzzer logs in and registers far more often than a person would, and the
# point here is what the routes do with its input, not the brute-force limits (tested elsewhere).
SERVER_ENV = {
    "BCRYPT_ROUNDS": "4",
    "LOGIN_MAX_FAILURES_PER_ACCOUNT": "100000",
    "LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
    "REGISTER_MAX_PER_ADDRESS": "100000",
}


def superuser_token(base_url: str, database_url: str, env: dict[str, str]) -> str:
    password = secrets.token_urlsafe(16)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "create-superuser",
            "--password-stdin",
            "--email",
            "fuzz@example.com",
            "--username",
            "fuzzer",
        ],
        input=password + "\n",
        text=True,
        check=True,
        cwd=BACKEND_DIR,
        env={**env, "DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL,
    )
    res = httpx.post(f"{base_url}/api/users/login/token/", data={"username": "fuzzer", "password": password})
    res.raise_for_status()
    token = str(res.json()["access_token"])
    cleaning = {"new_cleaning": {"name": "fuzzed", "price": 10}}
    httpx.post(f"{base_url}/api/cleanings/", json=cleaning, headers={"Authorization": f"Bearer {token}"})
    return token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=60, help="examples per route and phase")
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()

    database_url = sibling_database(DATABASE_URL, "fuzz")
    prepare_database(database_url)
    env = {**os.environ, **SERVER_ENV, "SECRET_KEY": str(SECRET_KEY), "PHRESH_ENV_FILE": os.devnull}
    with live_server(database_url, env=SERVER_ENV) as base_url:
        token = superuser_token(base_url, str(database_url), env)
        command = [
            sys.executable, "-m", "schemathesis.cli", "run", f"{base_url}/openapi.json",
            "--checks", "all",
            "--seed", str(args.seed),
            "--max-examples", str(args.examples),
            "--header", f"Authorization: Bearer {token}",
            "--workers", "2",
            "--no-color",
        ]  # fmt: skip
        return subprocess.run(command, cwd=BACKEND_DIR).returncode


if __name__ == "__main__":
    sys.exit(main())
