"""What an outside scan sees: security headers on every answer, the allowed hosts, which proxy
headers are believed and from whom, and nginx (deploy/nginx.conf) in front of a live server."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from app.core.config import BACKEND_DIR, MAX_REQUEST_BODY_BYTES
from scripts.live_server import live_server
from scripts.ports import free_port
from tests.conftest import TEST_DATABASE_URL

NGINX_CONF = BACKEND_DIR / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
EVERYWHERE = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}


@pytest.fixture(scope="module")
def app_with_a_bug() -> FastAPI:
    """The app with one more route, whose handler fails: the unhandled error's 500. (No lifespan:
    that route needs no database, and a second mail sender would race the suite's table wiping.)"""
    from app.api.server import get_application

    app = get_application(database_url=TEST_DATABASE_URL)

    async def fail() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/bug/", fail, methods=["POST"], name="tests:fail", include_in_schema=False)
    return app


# (method, path, extra request headers, body, the status expected): one of each kind of answer.
ANSWERS = [
    ("GET", "/api/health/", {}, None, 200),
    ("GET", "/api/users/me/", {}, None, 401),
    ("POST", "/api/users/", {"Content-Type": "application/json"}, b"{}", 422),
    ("POST", "/api/users/", {"Content-Type": "application/json"}, b"x" * (MAX_REQUEST_BODY_BYTES + 1), 413),
    ("GET", "/api/no-such-thing/", {}, None, 404),
    ("DELETE", "/api/health/", {}, None, 405),
    ("GET", "/api/cleanings", {}, None, 307),  # the trailing-slash redirect
    (
        "OPTIONS",
        "/api/cleanings/",
        {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
        None,
        200,
    ),
    ("GET", "/api/health/", {"Host": "evil.example"}, None, 400),
    ("POST", "/api/bug/", {}, None, 500),
    ("GET", "/openapi.json", {}, None, 200),
    ("GET", "/docs", {}, None, 200),
    ("GET", "/redoc", {}, None, 200),
    ("GET", "/static-offline-docs/swagger-ui.css", {}, None, 200),
    ("GET", "/nowhere", {}, None, 404),
]


class TestSecurityHeaders:
    @pytest.mark.parametrize(("method", "path", "headers", "body", "expected"), ANSWERS)
    async def test_every_kind_of_answer_carries_them(
        self,
        started_app: FastAPI,
        app_with_a_bug: FastAPI,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        expected: int,
    ) -> None:
        app = app_with_a_bug if path == "/api/bug/" else started_app
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            res = await client.request(method, path, headers=headers, content=body)
        assert res.status_code == expected
        for name, value in EVERYWHERE.items():
            assert res.headers.get_list(name) == [value], name
        if path.startswith("/api/"):
            # personal, or depending on who asks: never kept by a cache; and a JSON answer opened
            # in a browser may load nothing
            assert res.headers["cache-control"] == "no-store"
            assert res.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        else:
            # Swagger UI and ReDoc keep working (their script runs), and their assets stay cacheable;
            # no page may frame them
            assert res.headers["content-security-policy"] == "frame-ancestors 'none'"
            assert "cache-control" not in res.headers

    async def test_a_personal_answer_is_never_stored(self, authorized_client: AsyncClient) -> None:
        res = await authorized_client.get("/api/users/me/")
        assert res.status_code == 200 and res.headers["cache-control"] == "no-store"
        assert res.headers["x-content-type-options"] == "nosniff"


class TestAllowedHosts:
    @pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST", "testserver"])
    async def test_the_default_hosts_are_answered(self, client: AsyncClient, host: str) -> None:
        # the two-command start (127.0.0.1:8000), Docker's published port and the tutorial's
        # client (localhost:8000), the suite's in-process clients (testserver)
        assert (await client.get("/api/health/", headers={"Host": host})).status_code == 200

    @pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "0.0.0.0:8000"])
    async def test_another_host_gets_400_and_no_redirect_to_it(self, client: AsyncClient, host: str) -> None:
        res = await client.get("/api/cleanings", headers={"Host": host})
        assert res.status_code == 400
        assert "location" not in res.headers
        assert "ALLOWED_HOSTS" in res.json()["detail"]

    async def test_an_allowed_host_still_gets_the_trailing_slash_redirect_to_itself(self, client: AsyncClient) -> None:
        res = await client.get("/api/cleanings", headers={"Host": "localhost:8000"})
        assert res.status_code == 307
        assert res.headers["location"] == "http://localhost:8000/api/cleanings/"

    def test_a_live_server_answers_only_the_hosts_its_setting_lists(self) -> None:
        with live_server(TEST_DATABASE_URL, env={"ALLOWED_HOSTS": "api.example.com, 127.0.0.1"}) as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            assert raw_status(port, b"GET /api/health/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n") == 200
            assert raw_status(port, b"GET /api/cleanings HTTP/1.1\r\nHost: localhost\r\n\r\n") == 400
            assert raw_status(port, b"GET /api/health/ HTTP/1.0\r\n\r\n") == 400  # no Host at all

    def test_a_star_allows_any_host(self) -> None:
        with live_server(TEST_DATABASE_URL, env={"ALLOWED_HOSTS": "*"}) as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            assert raw_status(port, b"GET /api/health/ HTTP/1.1\r\nHost: anything.example\r\n\r\n") == 200


def raw_status(port: int, request: bytes, *, source: str = "127.0.0.1") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as sock:
        sock.sendall(request)
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1])


def address_seen(base_url: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None) -> str:
    """Register from `source`, sending `headers`: the address the server kept with the new session
    (the one its rate limits and audit trail use)."""
    name = f"addr{time.monotonic_ns()}"
    body = {"new_user": {"email": f"{name}@example.com", "username": name, "password": "p4ssword"}}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=base_url, transport=transport, timeout=60) as http:
        registered = http.post("/api/users/", json=body, headers=headers)
        assert registered.status_code == 201, registered.text
        token = registered.json()["access_token"]["access_token"]
        sessions = http.get("/api/users/me/sessions/", headers={"Authorization": f"Bearer {token}"}).json()
    [session] = sessions["sessions"]
    address = session["client_address"]
    assert isinstance(address, str)
    return address


class TestProxyHeaders:
    def test_by_default_no_peer_sets_its_address_not_even_one_on_the_same_host(self) -> None:
        # uvicorn's --proxy-headers would believe 127.0.0.1: every Phresh launcher turns it off
        with live_server(TEST_DATABASE_URL, workers=2) as base_url:
            forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
            assert address_seen(base_url, headers=forged) == "127.0.0.1"
            res = httpx.get(f"{base_url}/api/cleanings", headers=forged)
            assert res.headers["location"].startswith("http://127.0.0.1:")

    def test_only_a_trusted_proxy_sets_the_address_and_the_scheme(self) -> None:
        # The proxy connects from 127.0.0.2; a client on 127.0.0.1 is anybody.
        with live_server(TEST_DATABASE_URL, workers=2, env={"TRUSTED_PROXIES": "127.0.0.2/32"}) as base_url:
            forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "https"}
            assert address_seen(base_url, source="127.0.0.1", headers=forwarded) == "127.0.0.1"
            # the proxy's own entry (the last) counts; what the client claimed before it does not
            assert address_seen(base_url, source="127.0.0.2", headers=forwarded) == "203.0.113.9"
            assert address_seen(base_url, source="127.0.0.2") == "127.0.0.2"  # no header: the peer
            via_proxy = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
            with via_proxy:
                res = via_proxy.get(f"{base_url}/api/cleanings", headers=forwarded)
            assert res.headers["location"].startswith("https://127.0.0.1:")

    def test_a_chain_of_trusted_proxies_is_skipped(self) -> None:
        env = {"TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}
        with live_server(TEST_DATABASE_URL, env=env) as base_url:
            chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3"}
            assert address_seen(base_url, headers=chain) == "203.0.113.9"

    def test_the_address_header_without_trusted_proxies_stops_start_up(self) -> None:
        env = {**os.environ, "CLIENT_ADDRESS_HEADER": "X-Forwarded-For", "PHRESH_ENV_FILE": os.devnull}
        env.pop("TRUSTED_PROXIES", None)
        started = subprocess.run(
            [sys.executable, "-c", "import app.core.config"], cwd=BACKEND_DIR, env=env, capture_output=True, text=True
        )
        assert started.returncode != 0
        assert started.stderr.strip().splitlines()[-1].startswith("phresh: CLIENT_ADDRESS_HEADER is read only from")


def nginx_size(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", value.lower()).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def nginx_setting(conf: str, name: str) -> str:
    [value] = re.findall(rf"^\s*{name}\s+([^;]+);", conf, flags=re.MULTILINE)
    return str(value)


@pytest.fixture(scope="module")
def behind_nginx() -> Iterator[tuple[int, int]]:
    """A live server (2 workers) with nginx in front: (nginx's port, the server's port)."""
    if NGINX is None:
        assert not os.environ.get("PHRESH_REQUIRE_NGINX"), "PHRESH_REQUIRE_NGINX is set but nginx is not installed"
        pytest.skip("nginx is not installed (Debian: apt-get install nginx); CI installs it and runs this")
    with live_server(TEST_DATABASE_URL, workers=2, env={"TRUSTED_PROXIES": "127.0.0.1"}) as base_url:
        server_port = int(base_url.rsplit(":", 1)[1])
        with running_nginx(upstream_port=server_port) as nginx_port:
            yield nginx_port, server_port


class TestTheExampleNginxConfiguration:
    def test_it_sets_the_timeouts_and_the_body_limit_and_the_proxy_headers(self) -> None:
        conf = NGINX_CONF.read_text()
        for timeout in ("client_header_timeout", "client_body_timeout", "send_timeout"):
            assert nginx_setting(conf, timeout).endswith("s")
        assert nginx_size(nginx_setting(conf, "client_max_body_size")) == MAX_REQUEST_BODY_BYTES
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
        assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
        assert "proxy_set_header Host $host;" in conf

    def test_a_request_passes_with_the_clients_address(self, behind_nginx: tuple[int, int]) -> None:
        nginx_port, _ = behind_nginx
        base_url = f"http://127.0.0.1:{nginx_port}"
        # the client is on 127.0.0.3, nginx reaches the server from 127.0.0.1; the client's own
        # X-Forwarded-For is replaced by nginx
        assert address_seen(base_url, source="127.0.0.3", headers={"X-Forwarded-For": "203.0.113.9"}) == "127.0.0.3"
        res = httpx.get(f"{base_url}/api/health/")
        assert res.status_code == 200 and res.headers["x-content-type-options"] == "nosniff"

    def test_a_half_sent_request_is_cut_off_by_nginx_not_held_by_uvicorn(self, behind_nginx: tuple[int, int]) -> None:
        nginx_port, server_port = behind_nginx
        half = b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        # nginx closes it after its header timeout (1 s in this copy), answering nothing
        with socket.create_connection(("127.0.0.1", nginx_port), timeout=60) as sock:
            sock.sendall(half)
            assert sock.recv(1024) == b""
        # uvicorn alone keeps waiting: well past nginx's timeout, the connection is still open
        with socket.create_connection(("127.0.0.1", server_port), timeout=3) as sock:
            sock.sendall(half)
            with pytest.raises(TimeoutError):
                sock.recv(1024)

    def test_a_body_over_the_limit_gets_413_from_nginx(self, behind_nginx: tuple[int, int]) -> None:
        nginx_port, _ = behind_nginx
        head = (
            "POST /api/users/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_REQUEST_BODY_BYTES + 1}\r\n\r\n"
        )
        assert raw_status(nginx_port, head.encode()) == 413


@contextmanager
def running_nginx(*, upstream_port: int) -> Iterator[int]:
    """deploy/nginx.conf, run in the foreground from a directory of its own, on free ports, with a
    1 s header timeout; yields its port."""
    assert NGINX is not None
    port = free_port()
    prefix = tempfile.mkdtemp(prefix="phresh-nginx-")
    os.chmod(prefix, 0o755)  # noqa: S103 nginx's workers (nobody, when the master is root) write temp files here
    conf = NGINX_CONF.read_text()
    for old, new in (
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        ("pid /run/nginx-phresh.pid;", "pid nginx.pid;"),
        ("client_header_timeout 10s;", "client_header_timeout 1s;"),
    ):
        assert old in conf, old
        conf = conf.replace(old, new)
    conf_path = os.path.join(prefix, "nginx.conf")
    with open(conf_path, "w") as file:
        file.write(conf)
    error_log = os.path.join(prefix, "error.log")
    process = subprocess.Popen(
        [NGINX, "-p", prefix + "/", "-c", conf_path, "-e", error_log, "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                with open(error_log) if os.path.exists(error_log) else open(os.devnull) as log:
                    logged = log.read()
                assert process.poll() is None and time.monotonic() < deadline, f"nginx did not start: {logged}"
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(prefix, ignore_errors=True)
