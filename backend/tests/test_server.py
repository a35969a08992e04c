"""The service as a process: real uvicorn over real HTTP, start-up checks, the embedded database."""

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import psutil
import pytest
from fastapi import status

from app.core.config import BACKEND_DIR, SECRET_KEY_PLACEHOLDER
from scripts.live_server import live_server as run_live_server
from scripts.ports import free_port
from tests.conftest import TEST_DATABASE_URL


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def live_server() -> Iterator[str]:
    """uvicorn serving app.api.server:app on the test database, as `manage.py serve` runs it."""
    with run_live_server(TEST_DATABASE_URL) as base_url:
        yield base_url


class TestLiveServer:
    def test_swagger_ui_is_served_at_docs(self, live_server: str) -> None:
        res = httpx.get(f"{live_server}/docs")
        assert res.status_code == status.HTTP_200_OK
        assert "swagger-ui" in res.text.lower()

    def test_openapi_lists_every_route(self, live_server: str) -> None:
        paths = httpx.get(f"{live_server}/openapi.json").json()["paths"]
        assert set(paths) == {
            "/api/cleanings/",
            "/api/cleanings/{cleaning_id}/",
            "/api/users/",
            "/api/users/login/token/",
            "/api/users/login/token/refresh/",
            "/api/users/logout/",
            "/api/users/me/",
            "/api/users/me/sessions/",
            "/api/users/me/sessions/{session_id}/",
            "/api/users/{user_id}/end-sessions/",
            "/api/users/me/verification/",
            "/api/users/verify-email/",
            "/api/users/password-reset/",
            "/api/users/password-reset/confirm/",
            "/api/users/me/password/",
            "/api/users/{user_id}/deactivate/",
            "/api/users/{user_id}/reactivate/",
            "/api/profiles/{username}/",
            "/api/profiles/me/",
            "/api/cleanings/{cleaning_id}/offers/",
            "/api/cleanings/{cleaning_id}/offers/{username}/",
            "/api/users/{username}/evaluations/",
            "/api/users/{username}/evaluations/stats/",
            "/api/users/{username}/evaluations/{cleaning_id}/",
            "/api/feed/cleanings/",
            "/api/security-events/",
            "/api/health/",
            "/api/health/ready/",
            # issue 22 and after: search, cleaners, two-factor sign-in, leaving, notifications
            "/api/cleanings/search/",
            "/api/profiles/",
            "/api/users/login/mfa/",
            "/api/users/me/mfa/",
            "/api/users/me/mfa/enrolment/",
            "/api/users/me/mfa/enrolment/confirm/",
            "/api/users/me/mfa/recovery-codes/",
            "/api/users/me/mfa/disable/",
            "/api/users/{user_id}/mfa/reset/",
            "/api/users/me/export/",
            "/api/users/me/notifications/",
            "/api/users/unsubscribe/",
        }
        assert set(paths["/api/cleanings/{cleaning_id}/"]) == {"get", "put", "delete"}

    def test_register_log_in_and_work_over_http(self, live_server: str) -> None:
        new_user = {"email": "http@example.com", "username": "over_http", "password": "on-the-wire"}
        res = httpx.post(f"{live_server}/api/users/", json={"new_user": new_user})
        assert res.status_code == status.HTTP_201_CREATED
        assert res.json()["access_token"]["token_type"] == "bearer"
        res = httpx.post(f"{live_server}/api/users/", json={"new_user": new_user})
        assert res.status_code == status.HTTP_400_BAD_REQUEST

        # the OAuth2 password form, as Swagger UI's Authorize button sends it
        form = {"grant_type": "password", "username": "http@example.com", "password": "on-the-wire", "scope": ""}
        res = httpx.post(f"{live_server}/api/users/login/token/", data=form)
        assert res.status_code == status.HTTP_200_OK
        headers = {"Authorization": f"Bearer {res.json()['access_token']}"}

        res = httpx.get(f"{live_server}/api/users/me/", headers=headers)
        assert res.json()["username"] == "over_http"
        res = httpx.post(
            f"{live_server}/api/cleanings/", json={"new_cleaning": {"name": "porch", "price": 20}}, headers=headers
        )
        assert res.status_code == status.HTTP_201_CREATED
        res = httpx.get(f"{live_server}/api/cleanings/{res.json()['id']}/", headers=headers)
        assert res.json()["name"] == "porch"

    @pytest.mark.parametrize(
        "body, status_code",
        (
            (b"{not json", status.HTTP_422_UNPROCESSABLE_CONTENT),
            (b'{"new_user": {"email": "\xff\xfe"}}', status.HTTP_400_BAD_REQUEST),  # not UTF-8
        ),
    )
    def test_malformed_bodies_are_a_4xx_with_a_message(self, live_server: str, body: bytes, status_code: int) -> None:
        res = httpx.post(f"{live_server}/api/users/", content=body, headers={"Content-Type": "application/json"})
        assert res.status_code == status_code
        assert res.json()["detail"]


def run_app_import(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import app.api.server"],
        cwd=BACKEND_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestStartupChecks:
    @pytest.mark.parametrize(
        "secret_key, complaint",
        (
            (None, "SECRET_KEY is not set"),
            ("", "SECRET_KEY is not set"),
            (SECRET_KEY_PLACEHOLDER, "SECRET_KEY is still the placeholder"),
            ("too-short", "SECRET_KEY is shorter than 32 bytes"),
        ),
    )
    def test_a_missing_or_weak_secret_key_stops_startup_with_one_clear_line(
        self, secret_key: str | None, complaint: str
    ) -> None:
        env = {**os.environ, "DATABASE_URL": str(TEST_DATABASE_URL), "PHRESH_ENV_FILE": os.devnull}
        env.pop("SECRET_KEY")
        if secret_key is not None:
            env["SECRET_KEY"] = secret_key
        result = run_app_import(env)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert complaint in lines[0]
        assert "openssl rand -hex 32" in lines[0]

    def test_secret_key_is_read_from_the_env_file(self, tmp_path: Path) -> None:
        env_file = tmp_path / ".env"
        env_file.write_text(f"SECRET_KEY={'k' * 64}\n")
        env = {**os.environ, "DATABASE_URL": str(TEST_DATABASE_URL), "PHRESH_ENV_FILE": str(env_file)}
        env.pop("SECRET_KEY")
        result = subprocess.run(
            [sys.executable, "-c", "from app.core.config import SECRET_KEY; print(str(SECRET_KEY))"],
            cwd=BACKEND_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "k" * 64


def run_python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BACKEND_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


class TestEmbeddedDatabase:
    def test_with_no_database_configured_a_private_postgresql_is_migrated_and_keeps_its_data(
        self, pgdata_dir: Path, env_without_database: dict[str, str]
    ) -> None:
        env = {**env_without_database, "EMBEDDED_DB_DIR": str(pgdata_dir)}
        url = run_python("from app.core.config import DATABASE_URL; print(DATABASE_URL)", env)
        assert url.startswith("postgresql://postgres@/phresh?host=")

        migrate = subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=BACKEND_DIR,
            env=env,
            capture_output=True,
            text=True,
        )
        assert migrate.returncode == 0, migrate.stderr

        insert = (
            "import asyncio, asyncpg\n"
            "from app.core.config import DATABASE_URL\n"
            "async def main():\n"
            "    conn = await asyncpg.connect(str(DATABASE_URL))\n"
            "    await conn.execute(\"INSERT INTO cleanings (name, price) VALUES ('kept', 1)\")\n"
            "    await conn.close()\n"
            "asyncio.run(main())\n"
        )
        run_python(insert, env)
        # Each process above stopped the server when it exited; this one starts it again.
        select = (
            "import asyncio, asyncpg\n"
            "from app.core.config import DATABASE_URL\n"
            "async def main():\n"
            "    conn = await asyncpg.connect(str(DATABASE_URL))\n"
            "    print(await conn.fetchval('SELECT name FROM cleanings'))\n"
            "    await conn.close()\n"
            "asyncio.run(main())\n"
        )
        assert run_python(select, env) == "kept"

    def test_the_private_postgresql_stops_when_the_server_is_stopped(
        self, pgdata_dir: Path, env_without_database: dict[str, str]
    ) -> None:
        data_dir = pgdata_dir
        env = {**env_without_database, "EMBEDDED_DB_DIR": str(data_dir)}
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.api.server:app", "--port", str(port)],
            cwd=BACKEND_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not (data_dir / "postmaster.pid").exists() or not port_open(port):
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
            postgres_pid = int((data_dir / "postmaster.pid").read_text().split()[0])
            assert psutil.pid_exists(postgres_pid)
        finally:
            server.send_signal(signal.SIGTERM)  # what `docker stop`, systemd and Ctrl-C-less shutdowns send
            server.wait(timeout=30)
        # uvicorn re-raises SIGTERM after its shutdown, which skips exit handlers: the app's own
        # shutdown has to let go of the database, or PostgreSQL would run on with nobody using it.
        deadline = time.monotonic() + 60  # a bound on a hang: a busy machine stops PostgreSQL slowly
        while psutil.pid_exists(postgres_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not psutil.pid_exists(postgres_pid)

    def test_the_server_is_shared_and_a_process_killed_outright_does_not_keep_it_running(
        self, pgdata_dir: Path, env_without_database: dict[str, str]
    ) -> None:
        data_dir = pgdata_dir
        env = {**env_without_database, "EMBEDDED_DB_DIR": str(data_dir)}
        holder = hold_embedded_database(env)
        try:
            postgres_pid = int((data_dir / "postmaster.pid").read_text().split()[0])
            # A second process joins the running server, and leaving does not stop it under the first.
            run_python("from app.core.config import DATABASE_URL; print(DATABASE_URL)", env)
            assert int((data_dir / "postmaster.pid").read_text().split()[0]) == postgres_pid
            assert running(postgres_pid)
            # The first is killed outright: it never lets go, so the server runs on for now...
            holder.kill()
            holder.communicate(timeout=30)
            assert running(postgres_pid)
            # ... until the next process to come and go, which must not wait for the dead one.
            run_python("from app.core.config import DATABASE_URL; print(DATABASE_URL)", env)
            assert wait_until_gone(postgres_pid)
        finally:
            stop_leftovers(holder, data_dir)

    def test_the_last_process_to_let_go_stops_the_server(
        self, pgdata_dir: Path, env_without_database: dict[str, str]
    ) -> None:
        data_dir = pgdata_dir
        env = {**env_without_database, "EMBEDDED_DB_DIR": str(data_dir)}
        first, second = hold_embedded_database(env), hold_embedded_database(env)
        try:
            postgres_pid = int((data_dir / "postmaster.pid").read_text().split()[0])
            first.communicate(input="", timeout=30)  # told to go: it exits normally
            assert running(postgres_pid)
            second.communicate(input="", timeout=30)
            assert wait_until_gone(postgres_pid)
        finally:
            stop_leftovers(first, data_dir)
            stop_leftovers(second, data_dir)

    def test_data_of_another_postgresql_major_version_stops_startup_with_one_clear_line(
        self, pgdata_dir: Path, env_without_database: dict[str, str]
    ) -> None:
        # What pgserver (PostgreSQL 16), which Phresh used before, left in backend/.pgdata.
        data_dir = pgdata_dir
        data_dir.mkdir()
        (data_dir / "PG_VERSION").write_text("16\n")
        (data_dir / "kept").write_text("the developer's data")
        env = {**env_without_database, "EMBEDDED_DB_DIR": str(data_dir)}
        result = run_app_import(env)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"{data_dir} holds PostgreSQL 16 data" in lines[0]
        assert f"mv {data_dir} {data_dir}-16" in lines[0]
        assert sorted(path.name for path in data_dir.iterdir()) == ["PG_VERSION", "kept"]  # left alone


def hold_embedded_database(env: dict[str, str]) -> "subprocess.Popen[str]":
    """A process attached to the embedded database, holding it until its stdin closes."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom app.core.config import DATABASE_URL\nprint('attached', flush=True)\nsys.stdin.read()",
        ],
        cwd=BACKEND_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "attached"
    return holder


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie has ended; only its parent has yet to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until_gone(pid: int) -> bool:
    deadline = time.monotonic() + 30
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not running(pid)


def stop_leftovers(holder: "subprocess.Popen[str]", data_dir: Path) -> None:
    # After a failure, nothing of the test may run on: neither the holder nor its PostgreSQL.
    if holder.poll() is None:
        holder.kill()
    holder.communicate(timeout=30)  # and closes its pipes
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(psutil.NoSuchProcess, ValueError):
            psutil.Process(int(pid_file.read_text().split()[0])).terminate()


def load_manage() -> ModuleType:
    spec = importlib.util.spec_from_file_location("manage", BACKEND_DIR / "manage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestManageServe:
    def test_a_stop_sent_to_serve_reaches_the_server_and_its_metrics_directory_goes(self, tmp_path: Path) -> None:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": str(TEST_DATABASE_URL),
            "PHRESH_ENV_FILE": os.devnull,
            "TMPDIR": str(tmp_path),  # where serve makes the workers' metrics directory
        }
        serve = subprocess.Popen(
            [sys.executable, str(BACKEND_DIR / "manage.py"), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120  # a bound on a hang: it migrates first
            while not port_open(port):
                assert serve.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
            assert httpx.get(f"http://127.0.0.1:{port}/api/health/").status_code == status.HTTP_200_OK
            server_pids = [child.pid for child in psutil.Process(serve.pid).children(recursive=True)]
            assert server_pids
            assert [path.name.startswith("phresh-metrics-serve-") for path in tmp_path.iterdir()] == [True]
        finally:
            serve.send_signal(signal.SIGTERM)  # a supervisor stopping `serve` itself, not uvicorn
            serve.wait(timeout=60)
        # The stop reached the server, which shut down in its own time, and the directory went with it.
        assert all(wait_until_gone(pid) for pid in server_pids)
        assert list(tmp_path.iterdir()) == []


class TestManageEnvFile:
    def test_first_run_writes_a_random_secret_key_and_never_overwrites(self, tmp_path: Path) -> None:
        manage = load_manage()
        env_file = tmp_path / ".env"
        assert manage.ensure_env_file(env_file) is True
        content = env_file.read_text()
        key = re.search(r"^SECRET_KEY=([0-9a-f]+)$", content, re.MULTILINE)
        assert key is not None and len(key.group(1)) == 64
        assert env_file.stat().st_mode & 0o077 == 0  # readable by its owner only

        assert manage.ensure_env_file(env_file) is False
        assert env_file.read_text() == content

        other = tmp_path / "other.env"
        manage.ensure_env_file(other)
        assert other.read_text() != content  # a fresh key each time, not a constant

    def test_an_existing_env_file_is_left_alone(self, tmp_path: Path) -> None:
        env_file = tmp_path / ".env"
        env_file.write_text("SECRET_KEY=mine\n")
        assert load_manage().ensure_env_file(env_file) is False
        assert env_file.read_text() == "SECRET_KEY=mine\n"


class TestManageSettings:
    def test_serve_reads_the_shutdown_grace_as_the_app_does_environment_then_env_file_then_default(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        manage = load_manage()
        env_file = tmp_path / ".env"
        monkeypatch.delenv("SHUTDOWN_GRACE_SECONDS", raising=False)
        assert manage.setting("SHUTDOWN_GRACE_SECONDS", default="20", env_file=env_file) == "20"
        env_file.write_text("SECRET_KEY=k\nSHUTDOWN_GRACE_SECONDS = '45'\n")
        assert manage.setting("SHUTDOWN_GRACE_SECONDS", default="20", env_file=env_file) == "45"
        monkeypatch.setenv("SHUTDOWN_GRACE_SECONDS", "7")
        assert manage.setting("SHUTDOWN_GRACE_SECONDS", default="20", env_file=env_file) == "7"


class TestManageVirtualenv:
    def test_each_python_version_gets_a_virtualenv_of_its_own(self, tmp_path: Path) -> None:
        manage = load_manage()
        base = tmp_path / ".venv"
        mine = f"{sys.version_info.major}.{sys.version_info.minor}"
        assert manage.venv_dir(base) == base  # none yet: the first Python to come takes .venv

        base.mkdir()
        (base / "pyvenv.cfg").write_text(f"home = /opt/python/bin\nversion = {mine}.99\n")
        assert manage.venv_dir(base) == base  # this Python's (any patch release of it)

        (base / "pyvenv.cfg").write_text("home = /opt/python/bin\nversion_info = 3.99.0.final.0\n")
        assert manage.venv_dir(base) == tmp_path / f".venv-{mine}"  # another version's: left alone
        assert manage.python_version_of(base) == "3.99"
