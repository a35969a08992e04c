"""Sessions: refresh tokens (rotation, reuse detection, the grace window), logout, my sessions.

Time passing (an idle timeout, an absolute lifetime, the end of the grace window) is simulated by
moving the stored timestamps back, the one thing a test cannot wait for.
"""

import asyncio
import hashlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient, Response

from app.core.config import (
    ACCESS_TOKEN_EXPIRE_MINUTES,
    REFRESH_MAX_FAILURES_PER_ADDRESS,
    SECRET_KEY,
    SESSION_IDLE_TIMEOUT_MINUTES,
    SESSIONS_MAX_PER_USER,
)
from app.models.user import UserInDB, UserPublic
from scripts.live_server import live_server
from tests.conftest import TEST_DATABASE_URL, bearer, log_in

PASSWORD = "heatcavslakers"  # test_user's
SESSION_ENDED = {"detail": "This session has ended. Log in again."}
REUSED = {"detail": "This refresh token was used before, so its session has ended. Log in again."}


@dataclass
class Login:
    """What a login hands a client: an access token and a refresh token, of one session."""

    access_token: str
    refresh_token: str
    expires_in: int

    @property
    def session_id(self) -> str:
        return str(jwt.decode(self.access_token, options={"verify_signature": False})["sid"])

    @classmethod
    def of(cls, res: Response) -> "Login":
        assert res.status_code == status.HTTP_200_OK, res.text
        body = res.json()
        assert body["token_type"] == "bearer"
        return cls(body["access_token"], body["refresh_token"], body["expires_in"])


@pytest.fixture
def login(app: FastAPI, client: AsyncClient, test_user: UserPublic) -> Callable[..., Awaitable[Login]]:
    async def _login(user_agent: str = "pytest") -> Login:
        res = await client.post(
            app.url_path_for("users:login-email-and-password"),
            data={"username": test_user.email, "password": PASSWORD},
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": user_agent},
        )
        return Login.of(res)

    return _login


async def refresh(app: FastAPI, client: AsyncClient, refresh_token: str) -> Response:
    return await client.post(app.url_path_for("users:refresh-access-token"), json={"refresh_token": refresh_token})


async def me(app: FastAPI, client: AsyncClient, access_token: str) -> Response:
    return await client.get(app.url_path_for("users:get-current-user"), headers=bearer(access_token))


async def logout(app: FastAPI, client: AsyncClient, access_token: str, scope: str | None = None) -> Response:
    params = {"scope": scope} if scope else {}
    return await client.post(app.url_path_for("users:logout"), params=params, headers=bearer(access_token))


async def events(db: Database, kind: str) -> list[dict[str, Any]]:
    rows = await db.fetch_all("SELECT * FROM security_events WHERE kind = :kind ORDER BY id", {"kind": kind})
    return [dict(row._mapping) for row in rows]


async def live_sessions(db: Database, user_id: int) -> int:
    return int(
        await db.fetch_val(
            "SELECT count(*) FROM sessions WHERE user_id = :id AND ended_at IS NULL AND expires_at > now()",
            {"id": user_id},
        )
    )


class TestLogin:
    async def test_login_returns_a_refresh_token_and_the_access_tokens_lifetime(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        assert len(tokens.refresh_token) == 43  # 256 random bits, base64url
        assert tokens.expires_in == ACCESS_TOKEN_EXPIRE_MINUTES * 60
        claims = jwt.decode(tokens.access_token, str(SECRET_KEY), audience="phresh:auth", algorithms=["HS256"])
        # the token is minted a moment after the answer reads its clock: a second may turn in between
        assert tokens.expires_in - 1 <= claims["exp"] - claims["iat"] <= tokens.expires_in
        # the database keeps the refresh token's SHA-256 only
        stored = await db.fetch_all("SELECT token_hash FROM refresh_tokens")
        assert [bytes(row["token_hash"]) for row in stored] == [hashlib.sha256(tokens.refresh_token.encode()).digest()]
        dump = str(await db.fetch_all("SELECT * FROM refresh_tokens")) + str(
            await db.fetch_all("SELECT * FROM sessions")
        )
        assert tokens.refresh_token not in dump
        assert (await me(app, client, tokens.access_token)).status_code == status.HTTP_200_OK

    async def test_registration_starts_a_session_too(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.post(
            app.url_path_for("users:register-new-user"),
            json={"new_user": {"email": "new@example.com", "username": "newcomer", "password": "a-secret-1"}},
        )
        assert res.status_code == status.HTTP_201_CREATED
        tokens = res.json()["access_token"]
        assert set(tokens) == {"access_token", "token_type", "expires_in", "refresh_token"}
        assert (await me(app, client, tokens["access_token"])).json()["username"] == "newcomer"
        refreshed = await refresh(app, client, tokens["refresh_token"])
        assert refreshed.status_code == status.HTTP_200_OK

    async def test_each_login_is_a_session_of_its_own(
        self, app: FastAPI, client: AsyncClient, login: Callable[..., Awaitable[Login]]
    ) -> None:
        first, second = await login(), await login()
        assert first.session_id != second.session_id
        assert (await logout(app, client, first.access_token)).status_code == status.HTTP_204_NO_CONTENT
        assert (await me(app, client, second.access_token)).status_code == status.HTTP_200_OK

    async def test_a_token_that_names_no_session_is_refused(
        self, app: FastAPI, client: AsyncClient, login: Callable[..., Awaitable[Login]]
    ) -> None:
        claims = jwt.decode((await login()).access_token, str(SECRET_KEY), audience="phresh:auth", algorithms=["HS256"])
        for sid in (None, "00000000-0000-4000-8000-000000000000"):
            forged = {**claims, "jti": f"other-{sid}"}
            if sid is None:
                del forged["sid"]
            else:
                forged["sid"] = sid
            res = await me(app, client, jwt.encode(forged, str(SECRET_KEY), algorithm="HS256"))
            assert res.status_code == status.HTTP_401_UNAUTHORIZED

    async def test_a_request_checks_its_session_in_the_query_that_loads_the_user(
        self,
        app: FastAPI,
        client: AsyncClient,
        db: Database,
        login: Callable[..., Awaitable[Login]],
        count_queries: list[str],
    ) -> None:
        tokens = await login()
        count_queries.clear()
        assert (await me(app, client, tokens.access_token)).status_code == status.HTTP_200_OK
        [query] = count_queries  # one round trip: the user, their profile, and the session
        assert "FROM users" in query and "JOIN sessions" in query and "JOIN profiles" in query
        # marking the session as used is one more statement, at most once a minute
        await db.execute("UPDATE sessions SET last_used_at = now() - interval '61 seconds'")
        count_queries.clear()
        assert (await me(app, client, tokens.access_token)).status_code == status.HTTP_200_OK
        assert (await me(app, client, tokens.access_token)).status_code == status.HTTP_200_OK
        assert len(count_queries) == 3 and count_queries[1].strip().startswith("UPDATE sessions")


class TestRefresh:
    async def test_a_refresh_rotates_both_tokens(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        first = await login()
        second = Login.of(await refresh(app, client, first.refresh_token))
        assert second.refresh_token != first.refresh_token
        assert second.access_token != first.access_token
        assert second.session_id == first.session_id  # the same session goes on
        assert (await me(app, client, second.access_token)).status_code == status.HTTP_200_OK
        third = Login.of(await refresh(app, client, second.refresh_token))
        assert len({first.refresh_token, second.refresh_token, third.refresh_token}) == 3
        assert [e["detail"] for e in await events(db, "session_refreshed")] == [f"session {first.session_id}"] * 2

    async def test_a_used_refresh_token_presented_again_ends_the_whole_session(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        stolen = await login()
        legitimate = Login.of(await refresh(app, client, stolen.refresh_token))
        newest = Login.of(await refresh(app, client, legitimate.refresh_token))
        await db.execute("UPDATE refresh_tokens SET used_at = used_at - interval '1 minute'")  # the grace is over

        res = await refresh(app, client, stolen.refresh_token)  # the thief (or the victim) comes back with it
        assert res.status_code == status.HTTP_401_UNAUTHORIZED
        assert res.json() == REUSED
        # every descendant dies with the session: tokens of both sides are refused at their next use
        assert (await refresh(app, client, newest.refresh_token)).json() == SESSION_ENDED
        for access_token in (stolen.access_token, legitimate.access_token, newest.access_token):
            res = await me(app, client, access_token)
            assert (res.status_code, res.json()) == (status.HTTP_401_UNAUTHORIZED, SESSION_ENDED)
        reused = await events(db, "refresh_token_reused")
        assert [(e["user_id"], e["detail"]) for e in reused] == [(1, f"session {stolen.session_id} ended")]
        assert await db.fetch_val("SELECT end_reason FROM sessions") == "refresh_token_reused"

    async def test_within_the_grace_window_the_same_successor_comes_back(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        first = Login.of(await refresh(app, client, tokens.refresh_token))
        again = Login.of(await refresh(app, client, tokens.refresh_token))  # a second tab, a moment later
        assert again.refresh_token == first.refresh_token
        assert again.session_id == first.session_id
        assert await db.fetch_val("SELECT count(*) FROM refresh_tokens") == 2  # one successor, not two
        # the session is alive, and the shared successor moves it on
        assert (await me(app, client, again.access_token)).status_code == status.HTTP_200_OK
        assert (await refresh(app, client, first.refresh_token)).status_code == status.HTTP_200_OK

    async def test_within_the_grace_window_a_tab_catches_up_with_a_chain_that_moved_on(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        second = Login.of(await refresh(app, client, tokens.refresh_token))  # one tab refreshes twice
        third = Login.of(await refresh(app, client, second.refresh_token))
        late = Login.of(await refresh(app, client, tokens.refresh_token))  # the other tab, a moment later
        assert late.refresh_token == third.refresh_token  # the newest, not the spent second one
        assert (await me(app, client, late.access_token)).status_code == status.HTTP_200_OK
        assert (await refresh(app, client, late.refresh_token)).status_code == status.HTTP_200_OK
        assert await db.fetch_val("SELECT count(*) FROM sessions WHERE ended_at IS NULL") == 1

    async def test_concurrent_refreshes_with_one_token_all_get_the_same_successor(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        for _ in range(3):
            tokens = await login()
            responses = await asyncio.gather(*(refresh(app, client, tokens.refresh_token) for _ in range(6)))
            assert [res.status_code for res in responses] == [status.HTTP_200_OK] * 6
            assert len({res.json()["refresh_token"] for res in responses}) == 1
            successors = await db.fetch_val(
                "SELECT count(*) FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id"
                " WHERE s.id = :sid AND t.used_at IS NULL",
                {"sid": tokens.session_id},
            )
            assert successors == 1
            assert (await me(app, client, responses[0].json()["access_token"])).status_code == status.HTTP_200_OK

    def test_concurrent_refreshes_across_worker_processes(
        self, db: Database, test_user: UserPublic, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Two worker processes of a live server: six threads send the same refresh token at once.
        with live_server(TEST_DATABASE_URL, workers=2) as base_url:
            form = {"username": test_user.email, "password": PASSWORD}
            tokens = Login.of(httpx.post(f"{base_url}/api/users/login/token/", data=form))
            start = threading.Barrier(6)
            answers: list[httpx.Response] = []

            def tab() -> None:
                start.wait()
                answers.append(
                    httpx.post(
                        f"{base_url}/api/users/login/token/refresh/", json={"refresh_token": tokens.refresh_token}
                    )
                )

            threads = [threading.Thread(target=tab) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert [answer.status_code for answer in answers] == [200] * 6
            assert len({answer.json()["refresh_token"] for answer in answers}) == 1
            successor = answers[0].json()
            me_res = httpx.get(f"{base_url}/api/users/me/", headers=bearer(successor["access_token"]))
            assert me_res.status_code == 200
            assert (
                httpx.post(
                    f"{base_url}/api/users/login/token/refresh/", json={"refresh_token": successor["refresh_token"]}
                ).status_code
                == 200
            )

    async def test_concurrent_refreshes_after_the_grace_window_end_the_session(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        Login.of(await refresh(app, client, tokens.refresh_token))
        await db.execute("UPDATE refresh_tokens SET used_at = used_at - interval '1 minute'")
        responses = await asyncio.gather(*(refresh(app, client, tokens.refresh_token) for _ in range(4)))
        assert sorted(res.json()["detail"] for res in responses) == sorted(
            [REUSED["detail"]] + [SESSION_ENDED["detail"]] * 3
        )  # the first ends the session; the others find it ended
        assert len(await events(db, "refresh_token_reused")) == 1

    @pytest.mark.parametrize(
        "body",
        (
            b'{"refresh_token": "' + b"A" * 43 + b'"}',  # the right shape, no such token
            b'{"refresh_token": "not a token"}',
            '{"refresh_token": "' + "\u00e9" * 43 + '"}',
            b'{"refresh_token": "\\u0000' + b"A" * 42 + b'"}',  # NUL
            b'{"refresh_token": "' + b"A" * 42 + b'="}',
        ),
    )
    async def test_a_token_that_is_not_one_of_ours_is_401(
        self, app: FastAPI, client: AsyncClient, login: Callable[..., Awaitable[Login]], body: bytes | str
    ) -> None:
        tokens = await login()
        res = await client.post(
            app.url_path_for("users:refresh-access-token"),
            content=body.encode() if isinstance(body, str) else body,
            headers={"Content-Type": "application/json"},
        )
        assert (res.status_code, res.json()) == (status.HTTP_401_UNAUTHORIZED, {"detail": "Invalid refresh token."})
        assert (await refresh(app, client, tokens.refresh_token)).status_code == status.HTTP_200_OK

    async def test_malformed_bodies_are_422(self, app: FastAPI, client: AsyncClient) -> None:
        path = app.url_path_for("users:refresh-access-token")
        for body in (
            {},
            {"refresh_token": None},
            {"refresh_token": 5},
            {"refresh_token": ""},
            {"refresh_token": "A" * 129},
        ):
            res = await client.post(path, json=body)
            assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT, body
            assert "A" * 129 not in res.text  # a token is never echoed back
        lone_surrogates = b'{"refresh_token": "\\ud800\\ud800"}'
        res = await client.post(path, content=lone_surrogates, headers={"Content-Type": "application/json"})
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT

    async def test_unknown_refresh_tokens_are_limited_per_address(
        self, app: FastAPI, client_from: Callable[[str], AsyncClient], login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        guesser, neighbour = client_from("203.0.113.7"), client_from("203.0.113.8")
        for _ in range(REFRESH_MAX_FAILURES_PER_ADDRESS):
            assert (await refresh(app, guesser, "B" * 43)).status_code == status.HTTP_401_UNAUTHORIZED
        res = await refresh(app, guesser, "B" * 43)
        assert res.status_code == status.HTTP_429_TOO_MANY_REQUESTS
        assert int(res.headers["Retry-After"]) > 0
        assert (await refresh(app, neighbour, tokens.refresh_token)).status_code == status.HTTP_200_OK

    async def test_successful_refreshes_are_not_limited(
        self, app: FastAPI, client: AsyncClient, login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        for _ in range(REFRESH_MAX_FAILURES_PER_ADDRESS + 5):
            tokens = Login.of(await refresh(app, client, tokens.refresh_token))


class TestExpiry:
    async def test_a_session_past_its_lifetime_is_over(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
        assert (await me(app, client, tokens.access_token)).json() == SESSION_ENDED
        assert (await refresh(app, client, tokens.refresh_token)).json() == SESSION_ENDED

    async def test_an_idle_session_is_over_and_a_used_one_is_not(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        idle, used = await login(), await login()
        await db.execute(
            "UPDATE sessions SET last_used_at = now() - make_interval(mins => :idle, secs => 1) WHERE id = :id",
            {"id": idle.session_id, "idle": SESSION_IDLE_TIMEOUT_MINUTES},
        )
        await db.execute(
            "UPDATE sessions SET last_used_at = now() - make_interval(mins => :idle - 2) WHERE id = :id",
            {"id": used.session_id, "idle": SESSION_IDLE_TIMEOUT_MINUTES},
        )
        assert (await me(app, client, idle.access_token)).json() == SESSION_ENDED
        assert (await refresh(app, client, idle.refresh_token)).json() == SESSION_ENDED
        # a request marks its session as used: the idle timeout starts again
        assert (await me(app, client, used.access_token)).status_code == status.HTTP_200_OK
        seconds_idle = await db.fetch_val(
            "SELECT extract(epoch FROM now() - last_used_at) FROM sessions WHERE id = :id", {"id": used.session_id}
        )
        assert seconds_idle < 60

    async def test_an_access_token_never_outlives_its_session(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        session_end = await db.fetch_val(
            "UPDATE sessions SET expires_at = now() + interval '90 seconds' RETURNING expires_at"
        )
        refreshed = Login.of(await refresh(app, client, tokens.refresh_token))
        assert 0 < refreshed.expires_in <= 90  # what is left of the session, however long the refresh took
        claims = jwt.decode(refreshed.access_token, str(SECRET_KEY), audience="phresh:auth", algorithms=["HS256"])
        assert claims["exp"] == int(session_end.timestamp())  # the token ends with its session


class TestLogout:
    async def test_local_ends_this_session_at_once(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        this, other = await login(), await login()
        assert (await logout(app, client, this.access_token)).status_code == status.HTTP_204_NO_CONTENT
        res = await me(app, client, this.access_token)  # refused on its next use, long before it expires
        assert (res.status_code, res.json()) == (status.HTTP_401_UNAUTHORIZED, SESSION_ENDED)
        assert (await refresh(app, client, this.refresh_token)).json() == SESSION_ENDED
        assert (await me(app, client, other.access_token)).status_code == status.HTTP_200_OK
        assert (await refresh(app, client, other.refresh_token)).status_code == status.HTTP_200_OK
        assert [e["detail"] for e in await events(db, "logout")] == [
            f"scope local from session {this.session_id}: 1 ended"
        ]
        # logging out twice: the session is gone, so is the caller
        assert (await logout(app, client, this.access_token)).status_code == status.HTTP_401_UNAUTHORIZED

    async def test_others_ends_every_other_session(
        self, app: FastAPI, client: AsyncClient, login: Callable[..., Awaitable[Login]]
    ) -> None:
        this, second, third = await login(), await login(), await login()
        assert (await logout(app, client, this.access_token, "others")).status_code == status.HTTP_204_NO_CONTENT
        assert (await me(app, client, this.access_token)).status_code == status.HTTP_200_OK
        for ended in (second, third):
            assert (await me(app, client, ended.access_token)).json() == SESSION_ENDED
            assert (await refresh(app, client, ended.refresh_token)).json() == SESSION_ENDED

    async def test_global_ends_them_all(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        sessions = [await login() for _ in range(3)]
        assert (await logout(app, client, sessions[1].access_token, "global")).status_code == 204
        for ended in sessions:
            assert (await me(app, client, ended.access_token)).json() == SESSION_ENDED
        assert await live_sessions(db, 1) == 0
        # the password still works: a new login is a new session
        assert (await me(app, client, (await login()).access_token)).status_code == status.HTTP_200_OK

    async def test_an_unknown_scope_is_422(
        self, app: FastAPI, client: AsyncClient, login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        res = await logout(app, client, tokens.access_token, "everything")
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert (await me(app, client, tokens.access_token)).status_code == status.HTTP_200_OK

    async def test_logout_needs_a_token(self, app: FastAPI, client: AsyncClient) -> None:
        assert (await client.post(app.url_path_for("users:logout"))).status_code == status.HTTP_401_UNAUTHORIZED


class TestMySessions:
    async def test_i_see_my_live_sessions_with_the_current_one_marked(
        self, app: FastAPI, client: AsyncClient, login: Callable[..., Awaitable[Login]], test_user2: UserPublic
    ) -> None:
        phone, laptop, gone = await login("Phone/1.0"), await login("Laptop/2.0"), await login("Old/0.1")
        await logout(app, client, gone.access_token)
        await log_in(app, client, test_user2.email, "tennistwins")  # someone else's session
        res = await client.get(app.url_path_for("users:list-my-sessions"), headers=bearer(laptop.access_token))
        assert res.status_code == status.HTTP_200_OK
        listed = {item["id"]: item for item in res.json()["sessions"]}
        assert set(listed) == {phone.session_id, laptop.session_id}
        assert listed[laptop.session_id]["current"] is True and listed[phone.session_id]["current"] is False
        assert listed[phone.session_id]["user_agent"] == "Phone/1.0"
        assert listed[phone.session_id]["client_address"] == "127.0.0.1"
        for item in listed.values():
            assert item["created_at"] <= item["last_used_at"] < item["idle_expires_at"]
            assert item["created_at"] < item["expires_at"]
        for secret in (phone.refresh_token, laptop.refresh_token, phone.access_token):
            assert secret not in res.text

    async def test_i_can_end_one_of_my_sessions(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        this, lost_phone = await login(), await login()
        path = app.url_path_for("users:end-my-session", session_id=lost_phone.session_id)
        assert (await client.delete(path, headers=bearer(this.access_token))).status_code == 204
        assert (await me(app, client, lost_phone.access_token)).json() == SESSION_ENDED
        assert (await refresh(app, client, lost_phone.refresh_token)).json() == SESSION_ENDED
        assert (await me(app, client, this.access_token)).status_code == status.HTTP_200_OK
        assert (await client.delete(path, headers=bearer(this.access_token))).status_code == 404  # already ended
        assert len(await events(db, "session_ended")) == 1

    async def test_someone_elses_session_is_not_mine_to_end(
        self, app: FastAPI, client: AsyncClient, login: Callable[..., Awaitable[Login]], test_user2: UserPublic
    ) -> None:
        mine = await login()
        theirs = Login.of(await log_in(app, client, test_user2.email, "tennistwins"))
        path = app.url_path_for("users:end-my-session", session_id=theirs.session_id)
        res = await client.delete(path, headers=bearer(mine.access_token))
        assert (res.status_code, res.json()) == (404, {"detail": "No active session of yours has that id."})
        assert (await me(app, client, theirs.access_token)).status_code == status.HTTP_200_OK
        bad = await client.delete(
            app.url_path_for("users:end-my-session", session_id="not-a-uuid"), headers=bearer(mine.access_token)
        )
        assert bad.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT

    async def test_past_the_maximum_a_login_ends_the_least_recently_used_session(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        oldest = await login()
        await db.execute("UPDATE sessions SET last_used_at = now() - interval '1 hour'")
        await db.execute(
            "INSERT INTO sessions (user_id, expires_at, last_used_at)"
            " SELECT 1, now() + interval '1 day', now() - make_interval(secs => n) FROM generate_series(1, :n) n",
            {"n": SESSIONS_MAX_PER_USER - 1},
        )
        assert await live_sessions(db, 1) == SESSIONS_MAX_PER_USER
        newest = await login()
        assert await live_sessions(db, 1) == SESSIONS_MAX_PER_USER
        assert (await me(app, client, oldest.access_token)).json() == SESSION_ENDED
        assert (await me(app, client, newest.access_token)).status_code == status.HTTP_200_OK

    async def test_long_dead_sessions_are_deleted_at_the_next_login(
        self, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        await login()
        await login()
        await db.execute(
            "UPDATE sessions SET ended_at = now() - interval '8 days', end_reason = 'logout'"
            " WHERE created_at = (SELECT min(created_at) FROM sessions)"
        )
        await login()
        assert await db.fetch_val("SELECT count(*) FROM sessions") == 2
        assert await db.fetch_val("SELECT count(*) FROM refresh_tokens") == 2  # the dead one's went with it


class TestSessionsEndWithTheAccount:
    async def test_a_password_change_ends_every_other_session_and_keeps_mine(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        mine, other = await login(), await login()
        res = await client.put(
            app.url_path_for("users:change-password"),
            json={"password_change": {"current_password": PASSWORD, "new_password": "a-whole-new-one"}},
            headers=bearer(mine.access_token),
        )
        assert res.status_code == status.HTTP_200_OK
        fresh = res.json()["access_token"]
        assert fresh["refresh_token"] is None  # this session's refresh token stays as it was
        assert 0 < fresh["expires_in"] <= ACCESS_TOKEN_EXPIRE_MINUTES * 60
        assert jwt.decode(fresh["access_token"], options={"verify_signature": False})["sid"] == mine.session_id
        assert (await me(app, client, fresh["access_token"])).status_code == status.HTTP_200_OK
        assert (await me(app, client, other.access_token)).json() == SESSION_ENDED
        assert (await refresh(app, client, other.refresh_token)).json() == SESSION_ENDED
        assert (await refresh(app, client, mine.refresh_token)).status_code == status.HTTP_200_OK
        assert await db.fetch_val("SELECT end_reason FROM sessions WHERE ended_at IS NOT NULL") == "password_change"

    async def test_deactivation_ends_every_session_for_good(
        self,
        app: FastAPI,
        client: AsyncClient,
        client_for: Callable[[UserInDB], AsyncClient],
        login: Callable[..., Awaitable[Login]],
        test_superuser: UserInDB,
        test_user: UserPublic,
    ) -> None:
        sessions = [await login(), await login()]
        admin = client_for(test_superuser)
        res = await admin.post(app.url_path_for("users:deactivate-user", user_id=str(test_user.id)))
        assert res.status_code == status.HTTP_200_OK
        for ended in sessions:
            assert (await me(app, client, ended.access_token)).json() == {"detail": "Not an active user."}
            assert (await refresh(app, client, ended.refresh_token)).json() == SESSION_ENDED
        await admin.post(app.url_path_for("users:reactivate-user", user_id=str(test_user.id)))
        for ended in sessions:  # nothing from before comes back
            assert (await me(app, client, ended.access_token)).status_code == status.HTTP_401_UNAUTHORIZED
            assert (await refresh(app, client, ended.refresh_token)).json() == SESSION_ENDED
        assert (await me(app, client, (await login()).access_token)).status_code == status.HTTP_200_OK

    async def test_superusers_can_end_every_session_of_a_user(
        self,
        app: FastAPI,
        client: AsyncClient,
        db: Database,
        client_for: Callable[[UserInDB], AsyncClient],
        login: Callable[..., Awaitable[Login]],
        test_superuser: UserInDB,
        test_user: UserPublic,
    ) -> None:
        sessions = [await login(), await login()]
        admin = client_for(test_superuser)
        path = app.url_path_for("users:end-user-sessions", user_id=str(test_user.id))
        res = await admin.post(path)
        assert (res.status_code, res.json()) == (status.HTTP_200_OK, {"ended": 2})
        for ended in sessions:
            assert (await me(app, client, ended.access_token)).json() == SESSION_ENDED
        assert (await me(app, client, (await login()).access_token)).status_code == status.HTTP_200_OK
        assert (await admin.get(app.url_path_for("users:get-current-user"))).status_code == 200  # theirs go on
        [event] = await events(db, "sessions_ended_by_superuser")
        assert (event["user_id"], event["detail"]) == (test_user.id, f"by superuser {test_superuser.id}: 2 ended")

        unknown = await admin.post(app.url_path_for("users:end-user-sessions", user_id="999"))
        assert unknown.status_code == status.HTTP_404_NOT_FOUND
        user_client = await login()
        res = await client.post(path, headers=bearer(user_client.access_token))
        assert res.status_code == status.HTTP_403_FORBIDDEN


class TestAudit:
    async def test_logins_refreshes_reuse_and_logouts_are_recorded_without_secrets(
        self, app: FastAPI, client: AsyncClient, db: Database, login: Callable[..., Awaitable[Login]]
    ) -> None:
        tokens = await login()
        refreshed = Login.of(await refresh(app, client, tokens.refresh_token))
        await logout(app, client, refreshed.access_token)
        other = await login()
        Login.of(await refresh(app, client, other.refresh_token))
        await db.execute("UPDATE refresh_tokens SET used_at = used_at - interval '1 minute'")
        await refresh(app, client, other.refresh_token)
        rows = await db.fetch_all("SELECT kind, detail FROM security_events ORDER BY id")
        kinds = [row["kind"] for row in rows]
        assert kinds == [
            "login_success",
            "session_refreshed",
            "logout",
            "login_success",
            "session_refreshed",
            "refresh_token_reused",
        ]
        trail = str([dict(row._mapping) for row in rows])
        for secret in (tokens.refresh_token, refreshed.refresh_token, other.refresh_token, tokens.access_token):
            assert secret not in trail
