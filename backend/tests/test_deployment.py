"""What can be checked of the container path and the docs without a Docker engine."""

import re
import shlex

import yaml

from app.core.config import BACKEND_DIR, SECRET_KEY_PLACEHOLDER

ROOT_DIR = BACKEND_DIR.parent
SERVE_COMMAND = "alembic upgrade head && exec uvicorn app.api.server:app --host 0.0.0.0 --port 8000"


def compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded = yaml.safe_load((ROOT_DIR / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def readme() -> str:
    return (ROOT_DIR / "README.md").read_text()


class TestCompose:
    def test_names_the_server_and_db_services(self) -> None:
        assert set(compose()["services"]) == {"server", "db"}

    def test_server_migrates_then_serves_the_app(self) -> None:
        server = compose()["services"]["server"]
        assert server["build"] == "./backend"
        assert server["command"] == f'sh -c "{SERVE_COMMAND}"'
        assert server["env_file"] == ".env"
        assert "@db:5432/" in str(server["environment"]["DATABASE_URL"])  # type: ignore[index]
        assert server["depends_on"] == {"db": {"condition": "service_healthy"}}

    def test_db_has_a_healthcheck_and_a_volume(self) -> None:
        db = compose()["services"]["db"]
        assert "pg_isready" in " ".join(db["healthcheck"]["test"])  # type: ignore[index]
        assert any(str(volume).endswith(":/var/lib/postgresql/data") for volume in db["volumes"])  # type: ignore[attr-defined]

    def test_dockerfile_runs_the_same_command(self) -> None:
        dockerfile = (BACKEND_DIR / "Dockerfile").read_text()
        cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
        assert cmd is not None
        assert yaml.safe_load(cmd.group(1)) == ["sh", "-c", SERVE_COMMAND]
        assert "requirements-dev.txt" in dockerfile  # so that `docker compose exec server pytest` works


class TestDocumentedCommands:
    def test_readme_shows_the_two_commands_and_the_container_path(self) -> None:
        text = readme()
        assert "python3 backend/manage.py serve" in text
        assert "python3 backend/manage.py test" in text
        assert "docker compose up --build" in text
        assert "docker compose exec server pytest" in text

    def test_ci_runs_the_readmes_test_command_on_both_databases(self) -> None:
        lines = [shlex.split(line, comments=True) for line in (ROOT_DIR / ".ci" / "run").read_text().splitlines()]
        commands = [line for line in lines if line]
        assert ["python3", "backend/manage.py", "test"] in commands
        assert [
            "DATABASE_URL=postgresql://postgres@127.0.0.1:5432/phresh",
            "python3",
            "backend/manage.py",
            "test",
        ] in commands

    def test_env_example_holds_only_the_placeholder_the_server_refuses(self) -> None:
        example = (ROOT_DIR / ".env.example").read_text()
        settings = dict(
            line.split("=", 1) for line in example.splitlines() if line.strip() and not line.startswith("#")
        )
        assert settings == {"SECRET_KEY": SECRET_KEY_PLACEHOLDER}

    def test_env_files_and_local_state_are_ignored_by_git(self) -> None:
        ignored = (ROOT_DIR / ".gitignore").read_text().splitlines()
        for entry in (".env", "backend/.venv/", "backend/.pgdata/"):
            assert entry in ignored

    def test_every_setting_in_the_readme_table_exists_in_config(self) -> None:
        config_source = (BACKEND_DIR / "app" / "core" / "config.py").read_text()
        documented = re.findall(r"^\| `([A-Z_]+)` \|", readme(), re.MULTILINE)
        assert documented, "the README has a configuration table"
        for name in documented:
            assert f'"{name}"' in config_source, name


def test_repository_top_level_is_as_agreed() -> None:
    tracked = {path.name for path in ROOT_DIR.iterdir() if path.name != ".git"}
    expected = {"backend", "docker-compose.yml", ".env.example", "README.md", ".gitignore", ".ci"}
    # A developer's .env may sit beside them; nothing else does.
    assert tracked - {".env"} == expected


def test_pre_commit_runs_the_same_checks_as_ci() -> None:
    config = yaml.safe_load((BACKEND_DIR / ".pre-commit-config.yaml").read_text())
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    assert entries == ["python3 backend/manage.py lint"]
    assert "python3 backend/manage.py lint" in (ROOT_DIR / ".ci" / "run").read_text()
