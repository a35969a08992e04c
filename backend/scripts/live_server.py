"""Start the real service (uvicorn) on a scratch database, for the fuzzer and the benchmark."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from databases import DatabaseURL

from app.core.config import BACKEND_DIR, SECRET_KEY
from app.db.admin import migrate, recreate_database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_database(url: DatabaseURL) -> None:
    """An empty database at the newest migration."""
    asyncio.run(recreate_database(url))
    migrate(url)


@contextmanager
def live_server(
    database_url: DatabaseURL, *, workers: int = 1, env: dict[str, str] | None = None, log: int | None = None
) -> Iterator[str]:
    """Serve app.api.server:app on 127.0.0.1 with `workers` uvicorn workers; yield its base URL."""
    port = free_port()
    # The server gets this process's settings (whether from the environment or .env), then `env`.
    server_env = {
        **os.environ,
        "SECRET_KEY": str(SECRET_KEY),
        "DATABASE_URL": str(database_url),
        "PHRESH_ENV_FILE": os.devnull,
        **(env or {}),
    }
    command = [sys.executable, "-m", "uvicorn", "app.api.server:app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-access-log", "--workers", str(workers)]
    process = subprocess.Popen(command, cwd=BACKEND_DIR, env=server_env, stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/api/health/ready/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start (exit code {process.poll()})")
            time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
