"""Sessions and their refresh tokens. Every decision that two requests could race for (rotating a
refresh token, ending a session) is settled by row locks in PostgreSQL."""

from dataclasses import dataclass
from enum import Enum, auto
from typing import Any
from uuid import UUID

from app.core import config, metrics
from app.db import lone_queries
from app.db.errors import AccountNotActiveError
from app.db.repositories.base import MAX_ID, BaseRepository, as_dict
from app.db.repositories.users import UsersRepository, user_from_row, user_with_profile_columns
from app.models.session import SessionEndReason, SessionInDB
from app.models.user import UserInDB
from app.services.authentication import new_random_token, open_successor, random_token_hash, seal_successor

# A request marks its session as used at most this often: the idle timeout is exact to a minute,
# and a busy session costs one write a minute, not one per request.
TOUCH_INTERVAL_SECONDS = 60
# Dead sessions (and their refresh tokens) are deleted this long after they died, when their user
# next logs in: a user's rows stay few however often they log in.
DEAD_SESSION_RETENTION_DAYS = 7
# The longest a client's user agent is kept.
MAX_USER_AGENT_LENGTH = 512

IDLE = f"make_interval(mins => {int(config.SESSION_IDLE_TIMEOUT_MINUTES)})"
# Whether the session `s` is alive: not ended, within its lifetime, used within the idle timeout.
ALIVE = f"(s.ended_at IS NULL AND s.expires_at > now() AND s.last_used_at > now() - {IDLE})"

SESSION_COLUMNS = (
    "s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.last_used_at + "
    f"{IDLE} AS idle_expires_at, s.client_address, s.user_agent"
)

# A new session and its first refresh token; past the user's maximum, their least recently used
# sessions end (`sessions_ended`: how many, for the metrics); long-dead sessions of the user are
# deleted. (Every part of the statement sees the sessions as they were before it: the new one is not
# among those counted.) Only for a user who is active when the session is written, not merely when
# the caller read them: a deactivation or an account deletion under way holds the user's row, so this
# waits for it to end and reads the row again (none is written for an account that just went).
START_SESSION_QUERY = f"""
    WITH started AS (
        INSERT INTO sessions (user_id, expires_at, client_address, user_agent)
        SELECT id, now() + make_interval(mins => {int(config.SESSION_LIFETIME_MINUTES)}),
               :client_address, :user_agent
        FROM users
        WHERE id = :user_id AND is_active
        FOR SHARE
        RETURNING *
    ), first_token AS (
        INSERT INTO refresh_tokens (token_hash, session_id) SELECT :token_hash, id FROM started
    ), over_limit AS (
        UPDATE sessions SET ended_at = now(), end_reason = '{SessionEndReason.session_limit.value}'
        WHERE id IN (
            SELECT s.id FROM sessions s
            WHERE s.user_id = :user_id AND {ALIVE}
            ORDER BY s.last_used_at DESC, s.id
            OFFSET {int(config.SESSIONS_MAX_PER_USER) - 1}
        )
        RETURNING 1
    ), purged AS (
        DELETE FROM sessions
        WHERE user_id = :user_id
          AND least(ended_at, expires_at, last_used_at + {IDLE})
              < now() - make_interval(days => {DEAD_SESSION_RETENTION_DAYS})
    )
    SELECT {SESSION_COLUMNS}, (SELECT count(*) FROM over_limit) AS sessions_ended FROM started s;
"""

# The user a token names, their profile, and whether the token's session is alive (a null
# `session_stale` means it is not), in one round trip: the check on every authenticated request.
GET_SESSION_USER_QUERY = f"""
    SELECT {user_with_profile_columns()},
           s.last_used_at < now() - make_interval(secs => {TOUCH_INTERVAL_SECONDS}) AS session_stale
    FROM users u
    LEFT JOIN profiles p ON p.user_id = u.id
    LEFT JOIN sessions s ON s.id = :session_id AND s.user_id = u.id AND {ALIVE}
    WHERE u.id = :user_id;
"""

# Marks a session as used; sent at most once a minute per session, not with every request.
TOUCH_SESSION_QUERY = """
    UPDATE sessions SET last_used_at = now() WHERE id = :session_id AND ended_at IS NULL;
"""

# A refresh token, its session and its user, locked (token and session) until the end of the
# transaction: of two requests with the same token, the second reads what the first wrote.
LOCK_REFRESH_TOKEN_QUERY = f"""
    SELECT t.used_at IS NOT NULL AS used,
           t.used_at > now() - make_interval(secs => {int(config.REFRESH_REUSE_GRACE_SECONDS)}) AS in_grace,
           t.successor_sealed,
           {ALIVE} AS alive,
           {SESSION_COLUMNS}
    FROM refresh_tokens t
    JOIN sessions s ON s.id = t.session_id
    WHERE t.token_hash = :token_hash
    FOR UPDATE;
"""

ROTATE_REFRESH_TOKEN_QUERY = """
    WITH used AS (
        UPDATE refresh_tokens SET used_at = now(), successor_sealed = :successor_sealed
        WHERE token_hash = :token_hash
    ), successor AS (
        INSERT INTO refresh_tokens (token_hash, session_id) VALUES (:successor_hash, :session_id)
    )
    UPDATE sessions s SET last_used_at = now() WHERE s.id = :session_id;
"""

GET_SUCCESSOR_QUERY = """
    SELECT successor_sealed FROM refresh_tokens WHERE token_hash = :token_hash;
"""
# A client refreshes once an hour; a chain spent faster than this within a grace window is a loop.
MAX_SUCCESSORS_FOLLOWED = 16

END_SESSION_QUERY = """
    UPDATE sessions SET ended_at = now(), end_reason = :reason
    WHERE id = :session_id AND user_id = :user_id AND ended_at IS NULL
    RETURNING id;
"""

# All the user's sessions that are alive, or all but one.
END_SESSIONS_QUERY = f"""
    WITH ended AS (
        UPDATE sessions SET ended_at = now(), end_reason = :reason
        WHERE user_id = :user_id AND ended_at IS NULL AND id IS DISTINCT FROM CAST(:except_id AS uuid)
        RETURNING expires_at, last_used_at
    )
    SELECT count(*) FILTER (WHERE expires_at > now() AND last_used_at > now() - {IDLE}) FROM ended;
"""

GET_LIVE_SESSION_QUERY = f"""
    SELECT {SESSION_COLUMNS}
    FROM sessions s
    WHERE s.id = :session_id AND s.user_id = :user_id AND {ALIVE};
"""

LIST_SESSIONS_QUERY = f"""
    SELECT {SESSION_COLUMNS}
    FROM sessions s
    WHERE s.user_id = :user_id AND {ALIVE}
    ORDER BY s.last_used_at DESC, s.id;
"""


class RefreshOutcome(Enum):
    rotated = auto()  # a new access token and a new refresh token
    repeated = auto()  # the same refresh token again within the grace window: the same successor
    unknown = auto()  # no such refresh token
    ended = auto()  # its session has ended
    reused = auto()  # used before, outside the grace window: the session has just been ended


@dataclass(frozen=True, slots=True)
class Refresh:
    outcome: RefreshOutcome
    session: SessionInDB | None = None
    user: UserInDB | None = None
    refresh_token: str | None = None


def _session(row: dict[str, Any]) -> SessionInDB:
    return SessionInDB.model_validate(row)


def _user_agent(user_agent: str | None) -> str | None:
    if not user_agent:
        return None
    printable = "".join(char for char in user_agent if char.isprintable())
    return printable[:MAX_USER_AGENT_LENGTH] or None


class SessionsRepository(BaseRepository):
    async def start_session(
        self, *, user_id: int, client_address: str | None, user_agent: str | None
    ) -> tuple[SessionInDB, str]:
        """A new session for the user, and its first refresh token (only its hash is stored).

        AccountNotActiveError if the user is no longer active (deactivated, or their account
        deleted, after the caller checked their password): no session is written."""
        refresh_token = new_random_token()
        values = {
            "user_id": user_id,
            "client_address": client_address,
            "user_agent": _user_agent(user_agent),
            "token_hash": random_token_hash(refresh_token),
        }
        record = await self.db.fetch_one(START_SESSION_QUERY, values)
        if record is None:  # deactivated or deleted since the caller read the user
            raise AccountNotActiveError
        row = dict(as_dict(record))
        # Counted as the statement commits: no caller runs it inside a transaction of its own.
        metrics.count_sessions_ended(SessionEndReason.session_limit.value, int(row.pop("sessions_ended")))
        return _session(row), refresh_token

    async def get_session_user(self, *, user_id: int, session_id: UUID) -> tuple[UserInDB | None, bool]:
        """The user with their profile (None if there is none), and whether the session is theirs
        and alive; a live session is marked as used."""
        if not 1 <= user_id <= MAX_ID:
            return None, False
        # asyncpg's record itself, read in place: this runs on every authenticated request.
        row = await lone_queries.fetch_row(
            self.db, GET_SESSION_USER_QUERY, {"user_id": user_id, "session_id": session_id}
        )
        if row is None:
            return None, False
        stale = row["session_stale"]
        if stale:
            await self.db.execute(TOUCH_SESSION_QUERY, {"session_id": session_id})
        return user_from_row(row), stale is not None

    async def refresh(self, *, refresh_token: str) -> Refresh:
        """Use a refresh token: rotate it, repeat its successor within the grace window, or, if it
        was used before that, end its session."""
        token_hash = random_token_hash(refresh_token)
        if token_hash is None:
            return Refresh(RefreshOutcome.unknown)
        async with self.db.transaction():
            record = await self.db.fetch_one(LOCK_REFRESH_TOKEN_QUERY, {"token_hash": token_hash})
            if record is None:
                return Refresh(RefreshOutcome.unknown)
            row = dict(as_dict(record))
            session = _session(row)
            if not row["alive"]:
                return Refresh(RefreshOutcome.ended, session)
            if row["used"] and not row["in_grace"]:
                await self.db.execute(
                    END_SESSION_QUERY,
                    {
                        "session_id": session.id,
                        "user_id": session.user_id,
                        "reason": SessionEndReason.refresh_token_reused.value,
                    },
                )
                return Refresh(RefreshOutcome.reused, session)
            if row["used"]:
                successor = await self._newest_successor(refresh_token, row["successor_sealed"])
                outcome = RefreshOutcome.repeated
            else:
                successor = new_random_token()
                await self.db.execute(
                    ROTATE_REFRESH_TOKEN_QUERY,
                    {
                        "token_hash": token_hash,
                        "successor_sealed": seal_successor(token=refresh_token, successor=successor),
                        "successor_hash": random_token_hash(successor),
                        "session_id": session.id,
                    },
                )
                outcome = RefreshOutcome.rotated
            user = await UsersRepository(self.db).get_user_by_id(user_id=session.user_id, populate=False)
        return Refresh(outcome, session, user, successor)

    async def _newest_successor(self, token: str, sealed: bytes) -> str:
        """The newest refresh token descended from `token`: its successor, or, when that one was
        spent too (all within the grace window, since each was issued after `token` was spent),
        that one's successor, and so on. Runs under the session's lock, so the chain stands still."""
        successor = open_successor(token=token, sealed=sealed)
        for _ in range(MAX_SUCCESSORS_FOLLOWED):
            record = await self.db.fetch_one(GET_SUCCESSOR_QUERY, {"token_hash": random_token_hash(successor)})
            if record is None or record["successor_sealed"] is None:
                break
            successor = open_successor(token=successor, sealed=record["successor_sealed"])
        return successor

    async def end_session(self, *, user_id: int, session_id: UUID, reason: SessionEndReason) -> bool:
        """End one live session of the user's; whether there was one to end."""
        values = {"session_id": session_id, "user_id": user_id, "reason": reason.value}
        ended = await self.db.fetch_one(END_SESSION_QUERY, values) is not None
        metrics.count_sessions_ended(reason.value, int(ended))
        return ended

    async def end_sessions(self, *, user_id: int, reason: SessionEndReason, except_id: UUID | None = None) -> int:
        """End every session of the user (but `except_id`); how many of them were alive."""
        values = {"user_id": user_id, "reason": reason.value, "except_id": except_id}
        ended = int(await self.db.fetch_val(END_SESSIONS_QUERY, values) or 0)
        metrics.count_sessions_ended(reason.value, ended)
        return ended

    async def list_sessions(self, *, user_id: int) -> list[SessionInDB]:
        """The user's live sessions, most recently used first."""
        records = await self.db.fetch_all(LIST_SESSIONS_QUERY, {"user_id": user_id})
        return [_session(dict(as_dict(record))) for record in records]

    async def get_live_session(self, *, user_id: int, session_id: UUID) -> SessionInDB | None:
        record = await self.db.fetch_one(GET_LIVE_SESSION_QUERY, {"user_id": user_id, "session_id": session_id})
        return _session(dict(as_dict(record))) if record else None
