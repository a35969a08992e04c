"""What can be checked of the container path and the docs without a Docker engine.

The image holds backend/ alone: what reads the repository's top level skips inside it (`needs_repository`).
"""

import json
import re
import shlex
import subprocess
import sys

import yaml

from app.core.config import BACKEND_DIR, MAIL_STOP_SECONDS, SECRET_KEY_PLACEHOLDER, SHUTDOWN_GRACE_SECONDS
from scripts.live_server import live_server
from scripts.ports import free_port
from tests.conftest import TEST_DATABASE_URL, needs_repository

ROOT_DIR = BACKEND_DIR.parent
SERVE_COMMAND = (
    "alembic upgrade head && exec uvicorn app.api.server:app --host 0.0.0.0 --port 8000 --no-proxy-headers"
    " --timeout-graceful-shutdown ${SHUTDOWN_GRACE_SECONDS:-20}"
)


def compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded = yaml.safe_load((ROOT_DIR / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def readme() -> str:
    return (ROOT_DIR / "README.md").read_text()


def dockerfile_instructions(name: str) -> list[str]:
    """The arguments of each `name` instruction in backend/Dockerfile, continuation lines joined."""
    text = (BACKEND_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1].strip() for line in text.splitlines() if line.split(None, 1)[:1] == [name]]


def dockerignore() -> list[str]:
    lines = (BACKEND_DIR / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@needs_repository
class TestCompose:
    def test_names_the_server_and_db_services(self) -> None:
        assert set(compose()["services"]) == {"server", "db"}

    def test_server_migrates_then_serves_the_app(self) -> None:
        server = compose()["services"]["server"]
        assert server["build"] == "./backend"
        # `$$` in compose is a `$` for the container's shell, which reads SHUTDOWN_GRACE_SECONDS from .env.
        assert server["command"] == f'sh -c "{SERVE_COMMAND}"'.replace("$", "$$")
        assert server["env_file"] == ".env"
        assert "@db:5432/" in str(server["environment"]["DATABASE_URL"])  # type: ignore[index]
        assert server["depends_on"] == {"db": {"condition": "service_healthy"}}

    def test_server_gets_time_to_drain_before_it_is_killed(self) -> None:
        # compose sends SIGKILL this long after SIGTERM: more than the requests' and the mail sender's grace.
        period = str(compose()["services"]["server"]["stop_grace_period"])
        assert period.endswith("s") and int(period[:-1]) > SHUTDOWN_GRACE_SECONDS + MAIL_STOP_SECONDS

    def test_server_runs_under_an_init_that_reaps_orphans(self) -> None:
        # uvicorn as PID 1 reaps nobody: the test suite's servers leave their PostgreSQL as a zombie.
        assert compose()["services"]["server"]["init"] is True

    def test_db_has_a_healthcheck_and_a_volume(self) -> None:
        db = compose()["services"]["db"]
        assert "pg_isready" in " ".join(db["healthcheck"]["test"])  # type: ignore[index]
        assert any(str(volume).endswith(":/var/lib/postgresql/data") for volume in db["volumes"])  # type: ignore[attr-defined]


class TestImage:
    def test_dockerfile_runs_the_same_command(self) -> None:
        [cmd] = dockerfile_instructions("CMD")
        assert yaml.safe_load(cmd) == ["sh", "-c", SERVE_COMMAND]
        # so that `docker compose exec server pytest` works
        assert "requirements-dev.txt" in (BACKEND_DIR / "Dockerfile").read_text()

    def test_runs_as_a_user_of_its_own_not_root(self) -> None:
        *_, user = dockerfile_instructions("USER")
        uid, gid = user.split(":")
        assert uid != "0" and gid != "0"
        created = " ".join(dockerfile_instructions("RUN"))
        assert f"groupadd --gid {gid} " in created and f"useradd --create-home --uid {uid} " in created

    def test_healthcheck_passes_while_the_server_answers_and_fails_when_it_does_not(self) -> None:
        [healthcheck] = dockerfile_instructions("HEALTHCHECK")
        options, cmd = healthcheck.split(" CMD ")
        command = json.loads(cmd)
        assert command[0] == "python" and "http://127.0.0.1:8000/api/health/" in command[-1]
        assert "--timeout=" in options

        def check(base_url: str) -> int:
            probe = [sys.executable, *command[1:-1], command[-1].replace("http://127.0.0.1:8000", base_url)]
            return subprocess.run(probe, capture_output=True, timeout=30).returncode

        with live_server(TEST_DATABASE_URL) as base_url:
            assert check(base_url) == 0
        assert check(f"http://127.0.0.1:{free_port()}") != 0  # nothing listens there

    def test_build_context_leaves_out_local_state_secrets_caches_and_test_output(self) -> None:
        ignored = dockerignore()
        local_state = [".venv/", ".pgdata/", ".outbox/", ".env", "**/.env"]
        caches = [".pytest_cache/", ".mypy_cache/", ".ruff_cache/", "**/__pycache__/"]
        test_output = ["test-artifacts/", ".coverage", "htmlcov/", "benchmarks/results/"]
        for entry in local_state + caches + test_output:
            assert entry in ignored, entry
        # the image's own recipe stays in it: the tests above read it there too
        assert not {"Dockerfile", ".dockerignore"} & set(ignored)

    @needs_repository
    def test_build_context_leaves_out_all_that_git_ignores(self) -> None:
        ignored = dockerignore()
        for line in (ROOT_DIR / ".gitignore").read_text().splitlines():
            entry = line.strip()
            if entry and not entry.startswith("#"):
                assert entry.removeprefix("backend/") in ignored or f"**/{entry}" in ignored, entry


@needs_repository
class TestDocumentedCommands:
    def test_readme_shows_the_two_commands_and_the_container_path(self) -> None:
        text = readme()
        assert "python3 backend/manage.py serve" in text
        assert "python3 backend/manage.py test" in text
        assert "docker compose up --build" in text
        assert "docker compose exec server pytest" in text

    def test_ci_runs_the_readmes_test_command_on_both_databases_and_both_ends_of_the_python_range(self) -> None:
        lines = [shlex.split(line, comments=True) for line in (ROOT_DIR / ".ci" / "run").read_text().splitlines()]
        commands = [line for line in lines if line]
        assert ["python3", "backend/manage.py", "test"] in commands  # python3 is 3.11 on CI's machine
        assert [
            "DATABASE_URL=postgresql://postgres@127.0.0.1:5432/phresh",
            "python3",
            "backend/manage.py",
            "test",
        ] in commands
        assert ["python3.13", "backend/manage.py", "test"] in commands  # the newest Python CI's machine has
        # ... and the README states the range that was tested.
        assert "(CI runs the suite on 3.11 and 3.13)" in readme()

    def test_env_example_holds_only_the_placeholder_the_server_refuses(self) -> None:
        example = (ROOT_DIR / ".env.example").read_text()
        settings = dict(
            line.split("=", 1) for line in example.splitlines() if line.strip() and not line.startswith("#")
        )
        assert settings == {"SECRET_KEY": SECRET_KEY_PLACEHOLDER}

    def test_env_files_and_local_state_are_ignored_by_git(self) -> None:
        ignored = (ROOT_DIR / ".gitignore").read_text().splitlines()
        for entry in (".env", "backend/.venv/", "backend/.venv-*/", "backend/.pgdata/", "backend/.pgdata-*/"):
            assert entry in ignored

    def test_every_setting_in_the_readme_table_exists_in_config(self) -> None:
        # config.py reads the settings; the metrics' two are read where prometheus-client needs them.
        config_source = "".join(
            (BACKEND_DIR / "app" / "core" / name).read_text() for name in ("config.py", "metrics.py")
        )
        reference = (BACKEND_DIR / "docs" / "configuration.md").read_text()
        for text in (readme(), reference):
            documented = re.findall(r"^\| `([A-Z_]+)` \|", text, re.MULTILINE)
            assert documented, "a configuration table"
            for name in documented:
                assert f'"{name}"' in config_source, name

    def test_every_setting_config_reads_is_in_the_reference(self) -> None:
        config_source = (BACKEND_DIR / "app" / "core" / "config.py").read_text()
        reference = (BACKEND_DIR / "docs" / "configuration.md").read_text()
        read = set(re.findall(r'config\(\s*"([A-Z_0-9]+)"', config_source))
        assert len(read) > 40
        documented = set(re.findall(r"`([A-Z_0-9]+)`", reference))
        assert read - documented == set()


@needs_repository
def test_repository_top_level_is_as_agreed() -> None:
    tracked = {path.name for path in ROOT_DIR.iterdir() if path.name != ".git"}
    expected = {"backend", "docker-compose.yml", ".env.example", "README.md", ".gitignore", ".ci"}
    # A developer's .env may sit beside them; nothing else does.
    assert tracked - {".env"} == expected


@needs_repository
def test_pre_commit_runs_the_same_checks_as_ci() -> None:
    config = yaml.safe_load((BACKEND_DIR / ".pre-commit-config.yaml").read_text())
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    assert entries == ["python3 backend/manage.py lint"]
    assert "python3 backend/manage.py lint" in (ROOT_DIR / ".ci" / "run").read_text()
