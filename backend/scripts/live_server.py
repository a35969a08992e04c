"""Start the real service (uvicorn) on a given database, for tests, the fuzzer and the benchmark."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import httpx
from databases import DatabaseURL

from app.core.config import BACKEND_DIR, SECRET_KEY, SHUTDOWN_GRACE_SECONDS
from app.db.admin import migrate, recreate_database
from scripts.ports import free_port


def prepare_database(url: DatabaseURL) -> None:
    """An empty database at the newest migration."""
    asyncio.run(recreate_database(url))
    migrate(url)


class ServerProcess:
    """uvicorn serving app.api.server:app on 127.0.0.1, as `manage.py serve` runs it."""

    def __init__(
        self,
        database_url: DatabaseURL,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        output: int | IO[bytes] | None = subprocess.DEVNULL,
        module: str = "app.api.server:app",
    ) -> None:
        # The server gets this process's settings (from the environment or .env), then `env`.
        self.env = {
            **os.environ,
            "SECRET_KEY": str(SECRET_KEY),
            "DATABASE_URL": str(database_url),
            "PHRESH_ENV_FILE": os.devnull,
            **(env or {}),
        }
        self.workers = workers
        self.module = module
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self, *, wait_until_ready: bool = True, timeout: float = 60) -> str:
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", self.module, "--host", "127.0.0.1", "--port", str(port)]
        command += ["--no-access-log", "--no-proxy-headers", "--workers", str(self.workers)]
        # As `manage.py serve` and the image do: SIGTERM gives the requests in flight this long.
        grace = self.env.get("SHUTDOWN_GRACE_SECONDS", str(SHUTDOWN_GRACE_SECONDS))
        command += ["--timeout-graceful-shutdown", grace]
        self.process = subprocess.Popen(command, cwd=BACKEND_DIR, env=self.env, stdout=self.output, stderr=self.output)
        self.base_url = f"http://127.0.0.1:{port}"
        if wait_until_ready:
            self.wait_until_ready(timeout=timeout)
        return self.base_url

    def wait_until_ready(self, *, timeout: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base_url}/api/health/ready/", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready (exit code {self.process.poll()})")
            time.sleep(0.1)

    def kill(self) -> None:
        """End it the hard way (SIGKILL): no shutdown, nothing flushed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def live_server(
    database_url: DatabaseURL,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    output: int | IO[bytes] | None = subprocess.DEVNULL,
) -> Iterator[str]:
    """A ready server for the duration of the block; yields its base URL."""
    server = ServerProcess(database_url, workers=workers, env=env, output=output)
    try:
        yield server.start()
    finally:
        server.stop()
