"""Fuzz the live API with schemathesis, from its own OpenAPI document.

    python3 backend/manage.py fuzz [--examples N] [--seed S]

Starts the service on a scratch database (`<database>_fuzz`, on the configured server or the
embedded one), seeds a superuser (the fuzzer) and a small marketplace, and runs every schemathesis
check as that superuser, so that every locked route is exercised with a real session. Exits
non-zero on any server error or any response that breaks the documented schema.

Fuzzed requests can end the fuzzer's own session (a logout, ending its current session, ending
its user's sessions, a password change), rename it and change its password. Schemathesis runs in
this process with hooks (`install_hooks`) that keep it logged in through all of that, and that
turn the stand-ins of schemathesis.toml's dictionaries into live refresh tokens, session ids,
passwords, unsubscribe links and search cursors of the fuzzer's.
"""

import argparse
import ast
import itertools
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A scratch server signs with a key of its own: a fresh checkout has no .env, and a developer's
# key has no business here. Set before anything from `app` reads the settings.
os.environ["SECRET_KEY"] = secrets.token_hex(32)

import httpx
import schemathesis
from schemathesis import AuthContext, Case, HookContext, Response
from schemathesis.cli import schemathesis as schemathesis_cli
from schemathesis.filters import HasAPIOperation

from app.core.config import BACKEND_DIR, DATABASE_URL, SECRET_KEY
from app.db.admin import sibling_database
from app.models.notification import NotificationKind
from app.services.offer_mail import unsubscribe_token
from scripts.live_server import live_server, prepare_database

# Generous limits: the fuzzer logs in, registers and refreshes far more often than a person would,
# and the point here is what the routes do with its input, not the brute-force limits (tested
# elsewhere).
SERVER_ENV = {
    "BCRYPT_ROUNDS": "4",
    "LOGIN_MAX_FAILURES_PER_ACCOUNT": "100000",
    "LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
    "REGISTER_MAX_PER_ADDRESS": "100000",
    "REFRESH_MAX_FAILURES_PER_ADDRESS": "100000",
    "VERIFICATION_MAX_PER_USER": "100000",
    "PASSWORD_RESET_MAX_PER_EMAIL": "100000",
    "PASSWORD_RESET_MAX_PER_ADDRESS": "100000",
    # Its mail goes nowhere a developer would read (no SMTP server: files in a scratch folder).
    "SMTP_HOST": "",
    "MAIL_OUTBOX_DIR": str(Path(tempfile.gettempdir()) / "phresh-fuzz-outbox"),
}

FUZZER_USERNAME = "fuzzer"
FUZZER_EMAIL = "fuzz@example.com"

LOGIN = "POST /api/users/login/token/"
REFRESH = "POST /api/users/login/token/refresh/"
END_MY_SESSION = "DELETE /api/users/me/sessions/{session_id}/"
CHANGE_MY_PASSWORD = "PUT /api/users/me/password/"
UPDATE_ME = "PUT /api/users/me/"
SEARCH = "GET /api/cleanings/search/"
UNSUBSCRIBE = ("GET /api/users/unsubscribe/", "POST /api/users/unsubscribe/")

# The stand-ins of schemathesis.toml's dictionaries; `Fuzzer.fill_in` swaps each for a live value
# just before the request goes out.
FRESH_REFRESH_TOKEN = "stand-in:fresh-refresh-token"  # of a session started a moment ago
SPENT_REFRESH_TOKEN = "stand-in:spent-refresh-token"  # used once a moment ago (within the grace window)
ENDED_REFRESH_TOKEN = "stand-in:ended-refresh-token"  # of a session logged out a moment ago
ANOTHER_SESSION = "00000000-0000-4000-8000-00000000000a"  # another live session of the fuzzer's
CURRENT_SESSION = "00000000-0000-4000-8000-00000000000c"  # the session of the request's own token
CURRENT_PASSWORD = "stand-in:current-password"  # the fuzzer's password
SEARCH_CURSOR = "stand-in-search-cursor"  # the next_cursor of the same search's first page
UNSUBSCRIBE_TOKEN = "stand-in:unsubscribe-token"  # the unsubscribe token of a mail to the fuzzer


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Fuzzer:
    """The superuser schemathesis acts as: logs in again whenever its session has ended, takes its
    name back when a fuzzed request changes it, and follows the password changes that succeed."""

    def __init__(self, base_url: str, password: str) -> None:
        self.base_url = base_url
        self._lock = threading.Lock()
        self._password = password
        # New passwords of changes on their way (sent, no answer yet): one of them may be in force.
        self._pending_passwords: set[str] = set()
        res = httpx.get(f"{self.base_url}/api/users/me/", headers=self.log_in().headers)
        self.user_id = int(res.raise_for_status().json()["id"])
        self._kinds = itertools.cycle(NotificationKind)  # the kind of the next unsubscribe link

    def post(self, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        res = httpx.post(f"{self.base_url}{path}", headers=headers, **kwargs)
        res.raise_for_status()
        return res

    def log_in(self, *logins: str) -> Tokens:
        """A new session (by username, else by email: a fuzzed rename may be under way)."""
        with self._lock:
            passwords = [self._password, *self._pending_passwords]
        res: httpx.Response | None = None
        for login in dict.fromkeys((*logins, FUZZER_USERNAME, FUZZER_EMAIL)):
            for password in passwords:
                form = {"username": login, "password": password}
                res = httpx.post(f"{self.base_url}/api/users/login/token/", data=form)
                if res.is_success:
                    self._password_in_force(password)
                    body = res.json()
                    return Tokens(access_token=str(body["access_token"]), refresh_token=str(body["refresh_token"]))
        assert res is not None
        raise httpx.HTTPStatusError(f"the fuzzer cannot log in: {res.text}", request=res.request, response=res)

    def _password_in_force(self, password: str) -> None:
        with self._lock:
            if password in self._pending_passwords:
                self._pending_passwords.discard(password)
                self._password = password

    def session_id(self, headers: dict[str, str]) -> str | None:
        """The id of the session these headers' token belongs to; None if it has ended."""
        res = httpx.get(f"{self.base_url}/api/users/me/sessions/", headers=headers)
        if res.status_code == 401:
            return None
        res.raise_for_status()
        return str(next(session["id"] for session in res.json()["sessions"] if session["current"]))

    def refresh_token(self, stand_in: str) -> str:
        tokens = self.log_in()
        if stand_in == SPENT_REFRESH_TOKEN:
            self.post("/api/users/login/token/refresh/", json={"refresh_token": tokens.refresh_token})
        elif stand_in == ENDED_REFRESH_TOKEN:
            self.post("/api/users/logout/", headers=tokens.headers)
        return tokens.refresh_token

    def search_cursor(self, case: Case[Any]) -> str | None:
        """The next_cursor of the first page (of one job) of the search the case asks for, if it has one."""
        params = {name: value for name, value in (case.query or {}).items() if name != "cursor"}
        token = case.headers.get("Authorization") if case.headers else None
        headers = {"Authorization": str(token)} if token else self.log_in().headers
        res = httpx.get(f"{self.base_url}/api/cleanings/search/", params={**params, "limit": 1}, headers=headers)
        cursor = res.json().get("next_cursor") if res.status_code == 200 else None
        return str(cursor) if cursor else None

    def fill_in(self, case: Case[Any]) -> None:
        """Swap the stand-ins a request carries for live values (left as they are if that fails)."""
        label = case.operation.label
        try:
            if label == REFRESH and isinstance(case.body, dict):
                token = case.body.get("refresh_token")
                if token in (FRESH_REFRESH_TOKEN, SPENT_REFRESH_TOKEN, ENDED_REFRESH_TOKEN):
                    case.body["refresh_token"] = self.refresh_token(token)
            elif label == END_MY_SESSION:
                session_id = case.path_parameters.get("session_id")
                if session_id == ANOTHER_SESSION:
                    headers = self.log_in().headers
                elif session_id == CURRENT_SESSION and "Authorization" in case.headers:
                    # If that session has ended, the request is refused (401) and sent again with a
                    # new token: the stand-in is filled in then.
                    headers = {"Authorization": str(case.headers["Authorization"])}
                else:
                    return
                case.path_parameters["session_id"] = self.session_id(headers) or session_id
            elif label in UNSUBSCRIBE and case.query and case.query.get("token") == UNSUBSCRIBE_TOKEN:
                # Signed here as the server signs it: both have SECRET_KEY from this process.
                with self._lock:
                    kind = next(self._kinds)
                case.query["token"] = unsubscribe_token(user_id=self.user_id, kind=kind)
            elif label == LOGIN and isinstance(case.body, dict):
                if case.body.get("password") == CURRENT_PASSWORD:
                    with self._lock:
                        case.body["password"] = self._password
            elif label == SEARCH and isinstance(case.query, dict) and case.query.get("cursor") == SEARCH_CURSOR:
                case.query["cursor"] = self.search_cursor(case) or SEARCH_CURSOR
            elif label == CHANGE_MY_PASSWORD:
                change = _field(case.body, "password_change")
                if isinstance(change, dict) and change.get("current_password") == CURRENT_PASSWORD:
                    with self._lock:
                        change["current_password"] = self._password
                        if isinstance(change.get("new_password"), str):
                            self._pending_passwords.add(change["new_password"])
        except httpx.HTTPError as exc:
            print(f"fuzz: left a stand-in in {label}: {exc}", file=sys.stderr)

    def follow(self, case: Case[Any], response: Response) -> None:
        """After a password change, know which password is in force; after a rename, take the
        name back, so that the dictionaries' `fuzzer` keeps naming the fuzzer."""
        label = case.operation.label
        if label == CHANGE_MY_PASSWORD and response.status_code != 401:
            # A 401 (the token's session had ended) is sent again with a new token: still pending.
            new_password = _field(_field(case.body, "password_change"), "new_password")
            with self._lock:
                if isinstance(new_password, str) and new_password in self._pending_passwords:
                    self._pending_passwords.discard(new_password)
                    if response.status_code == 200:
                        self._password = new_password
        elif label == UPDATE_ME and response.status_code == 200:
            user = response.json()
            if user["id"] != self.user_id or (user["username"], user["email"]) == (FUZZER_USERNAME, FUZZER_EMAIL):
                return
            # With the token that renamed it; if that session has ended since, with a new one.
            headers = {"Authorization": str(case.headers.get("Authorization"))}
            restore = {"user_update": {"username": FUZZER_USERNAME, "email": FUZZER_EMAIL}}
            try:
                res = httpx.put(f"{self.base_url}/api/users/me/", json=restore, headers=headers)
                if res.status_code == 401:
                    headers = self.log_in(user["username"]).headers
                    res = httpx.put(f"{self.base_url}/api/users/me/", json=restore, headers=headers)
                res.raise_for_status()
            except httpx.HTTPError as exc:
                print(f"fuzz: the fuzzer stays renamed {user['username']}: {exc}", file=sys.stderr)


def _field(body: object, name: str) -> object:
    return body.get(name) if isinstance(body, dict) else None


def declares_security(context: HasAPIOperation) -> bool:
    return bool(context.operation.definition.raw.get("security"))


def install_hooks(fuzzer: Fuzzer) -> None:
    """Schemathesis sends every request that needs a token as the fuzzer, with a token cached until
    the server refuses it (401): its session has ended, so the fuzzer logs in again and the request
    is sent again."""

    class FuzzerAuth:
        def get(self, case: Case[Any], context: AuthContext) -> str:
            try:
                return fuzzer.log_in().access_token
            except httpx.HTTPError as exc:
                print(f"fuzz: the fuzzer cannot log in: {exc}", file=sys.stderr)
                raise

        def set(self, case: Case[Any], data: str, context: AuthContext) -> None:
            case.headers["Authorization"] = f"Bearer {data}"

    # Not on login, refresh or registration: a 401 there says nothing about the fuzzer's session.
    schemathesis.auth(retry_on=[401]).apply_to(declares_security)(FuzzerAuth)

    def before_call(context: HookContext, case: Case[Any], kwargs: dict[str, Any]) -> None:
        fuzzer.fill_in(case)

    def after_call(context: HookContext, case: Case[Any], response: Response) -> None:
        fuzzer.follow(case, response)

    schemathesis.hook(before_call)
    schemathesis.hook(after_call)


def create_fuzzer(base_url: str, database_url: str, env: dict[str, str]) -> Fuzzer:
    password = secrets.token_urlsafe(16)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "create-superuser",
            "--password-stdin",
            "--email",
            FUZZER_EMAIL,
            "--username",
            FUZZER_USERNAME,
        ],
        input=password + "\n",
        text=True,
        check=True,
        cwd=BACKEND_DIR,
        env={**env, "DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL,
    )
    fuzzer = Fuzzer(base_url, password)
    seed_marketplace(fuzzer)
    return fuzzer


def seed_marketplace(fuzzer: Fuzzer) -> None:
    """Cleaning 1 is the fuzzer's and cleaning 2 fuzz_cleaner's, each with an offer from the other
    (schemathesis.toml names them), so the offer and evaluation routes have something to act on.
    Cleaning 3 belonged to a user who has deleted their account since: the fuzzer's offer on it was
    accepted, so it stays, owned by a deleted user, and cleaning 1 holds that user's cancelled offer:
    every answer that embeds an owner or an offerer meets a deleted one. Cleanings 4 and 5 are done
    and evaluated (the fuzzer's job for fuzz_cleaner, and fuzz_cleaner's for the fuzzer), so that
    GET /api/profiles/ lists two cleaners and has a next page at a limit of 1."""
    mine = fuzzer.log_in().headers
    new_user = {"email": "cleaner@example.com", "username": "fuzz_cleaner", "password": secrets.token_urlsafe(16)}
    res = fuzzer.post("/api/users/", json={"new_user": new_user})
    cleaner = {"Authorization": f"Bearer {res.json()['access_token']['access_token']}"}
    for headers, name in ((mine, "fuzzed"), (cleaner, "fuzzed too")):
        fuzzer.post("/api/cleanings/", json={"new_cleaning": {"name": name, "price": 10}}, headers=headers)
    fuzzer.post("/api/cleanings/1/offers/", headers=cleaner)
    fuzzer.post("/api/cleanings/2/offers/", headers=mine)
    leaver_password = secrets.token_urlsafe(16)
    new_user = {"email": "leaver@example.com", "username": "fuzz_leaver", "password": leaver_password}
    res = fuzzer.post("/api/users/", json={"new_user": new_user})
    leaver = {"Authorization": f"Bearer {res.json()['access_token']['access_token']}"}
    fuzzer.post("/api/cleanings/", json={"new_cleaning": {"name": "left behind", "price": 10}}, headers=leaver)
    fuzzer.post("/api/cleanings/3/offers/", headers=mine)
    httpx.put(f"{fuzzer.base_url}/api/cleanings/3/offers/{FUZZER_USERNAME}/", headers=leaver).raise_for_status()
    fuzzer.post("/api/cleanings/1/offers/", headers=leaver)
    httpx.put(f"{fuzzer.base_url}/api/cleanings/1/offers/fuzz_leaver/", headers=mine).raise_for_status()
    deletion = {"account_deletion": {"password": leaver_password}}
    httpx.request("DELETE", f"{fuzzer.base_url}/api/users/me/", json=deletion, headers=leaver).raise_for_status()
    for cleaning_id, (owner, cleaner_name, worker) in enumerate(
        [(cleaner, FUZZER_USERNAME, mine), (mine, "fuzz_cleaner", cleaner)], start=4
    ):
        fuzzer.post("/api/cleanings/", json={"new_cleaning": {"name": "done", "price": 10}}, headers=owner)
        fuzzer.post(f"/api/cleanings/{cleaning_id}/offers/", headers=worker)
        offer = f"{fuzzer.base_url}/api/cleanings/{cleaning_id}/offers/{cleaner_name}/"
        httpx.put(offer, headers=owner).raise_for_status()
        evaluation = {"evaluation_create": {"overall_rating": cleaning_id, "professionalism": 5}}
        fuzzer.post(f"/api/users/{cleaner_name}/evaluations/{cleaning_id}/", json=evaluation, headers=owner)


def parse_one_at_a_time() -> None:
    """Python 3.11 before 3.11.8 (3.12 before 3.12.2) builds ASTs in state that all threads share,
    so two threads parsing at once can fail with "SystemError: AST constructor recursion depth
    mismatch" (python/cpython#106905; 3.11.7 here). Schemathesis's workers do that when Hypothesis
    describes a strategy's lambdas (it parses their module): one parse at a time."""
    parse = ast.parse
    lock = threading.Lock()

    def locked_parse(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return parse(*args, **kwargs)

    ast.parse = locked_parse


def run_schemathesis(arguments: list[str]) -> int:
    """The `schemathesis` command, in this process (so that it uses the hooks installed here)."""
    parse_one_at_a_time()
    try:
        schemathesis_cli.main(args=arguments, prog_name="schemathesis", standalone_mode=False)
    except SystemExit as exc:  # how the command reports its outcome
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=60, help="examples per route and phase")
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()

    database_url = sibling_database(DATABASE_URL, "fuzz")
    prepare_database(database_url)
    env = {**os.environ, **SERVER_ENV, "SECRET_KEY": str(SECRET_KEY), "PHRESH_ENV_FILE": os.devnull}
    with live_server(database_url, env=SERVER_ENV) as base_url:
        install_hooks(create_fuzzer(base_url, str(database_url), env))
        return run_schemathesis([
            "--config-file", str(BACKEND_DIR / "schemathesis.toml"),
            "run", f"{base_url}/openapi.json",
            "--checks", "all",
            # ST302 ("created resource not found") takes every path under a created resource's
            # path to name that resource. PUT and DELETE /api/cleanings/{cleaning_id}/offers/ act on
            # the caller's own offer for the cleaning, which a cleaning the fuzzer just posted does
            # not have: their 404 is right. A check runs on every operation or on none, so this one
            # is off; the test suite reads back every cleaning, offer and evaluation it creates.
            "--exclude-checks", "ensure_resource_availability",
            "--seed", str(args.seed),
            "--max-examples", str(args.examples),
            "--workers", "2",
            "--no-color",
        ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
