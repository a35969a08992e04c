"""The mail outbox and the tokens its messages carry. A message is enqueued in the transaction of
what causes it; the sender claims, prepares and settles it here."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.core import config, metrics
from app.db.repositories.base import BaseRepository, alive_ended_count, as_dict
from app.models.session import SessionEndReason
from app.services.authentication import new_random_token, random_token_hash


class MailKind(StrEnum):
    email_verification = "email_verification"
    password_reset = "password_reset"
    # Account notices (app/services/notices.py): no token, sent to the address they were written for.
    password_changed = "password_changed"
    email_changed = "email_changed"
    mfa_enabled = "mfa_enabled"
    mfa_disabled = "mfa_disabled"
    mfa_reset = "mfa_reset"
    account_deleted = "account_deleted"
    # Mail about offers (app/db/repositories/notifications.py): each kind on or off per user, with a
    # one-click unsubscribe; sent to the account's address of the moment, or not at all.
    offer_received = "offer_received"
    offer_accepted = "offer_accepted"
    offer_rejected = "offer_rejected"
    offer_cancelled = "offer_cancelled"


# The kinds that carry a token (a link), as opposed to the notices.
TOKEN_KINDS = frozenset({MailKind.email_verification, MailKind.password_reset})
# The kinds a user may turn off (NotificationKind's values): not account mail.
OFFER_KINDS = frozenset(
    {MailKind.offer_received, MailKind.offer_accepted, MailKind.offer_rejected, MailKind.offer_cancelled}
)


TOKEN_MINUTES = {
    MailKind.email_verification: config.EMAIL_VERIFICATION_TOKEN_MINUTES,
    MailKind.password_reset: config.PASSWORD_RESET_TOKEN_MINUTES,
}

ENQUEUE_QUERY = """
    INSERT INTO outbox_messages (kind, recipient, user_id, client_address, details)
    VALUES (:kind, :recipient, :user_id, :client_address, CAST(:details AS jsonb))
    RETURNING id;
"""

# How long a message may wait to be sent, from when it was asked for (see the settings' comment).
MAIL_MAX_AGE_MINUTES = {
    MailKind.email_verification: config.EMAIL_VERIFICATION_MAIL_MAX_AGE_MINUTES,
    MailKind.password_reset: config.PASSWORD_RESET_MAIL_MAX_AGE_MINUTES,
} | {
    kind: config.OFFER_MAIL_MAX_AGE_MINUTES if kind in OFFER_KINDS else config.NOTICE_MAIL_MAX_AGE_MINUTES
    for kind in MailKind
    if kind not in TOKEN_KINDS
}

# When a message stops being worth sending: created_at plus its kind's max age (integers from the settings).
END_OF_LIFE = (
    "created_at + make_interval(mins => CASE kind"
    + "".join(f" WHEN '{kind.value}' THEN {int(minutes)}" for kind, minutes in MAIL_MAX_AGE_MINUTES.items())
    + " END)"
)

# The oldest due message no other worker holds, held by this one for MAIL_CLAIM_SECONDS; or, when
# it is past its end of life, recorded as expired instead (so it is never sent late, and leaves the
# due index in the same statement that finds it through it).
CLAIM_QUERY = f"""
    WITH next AS (
        SELECT id, {END_OF_LIFE} <= now() AS expired
        FROM outbox_messages
        WHERE outcome IS NULL AND next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until < now())
        ORDER BY next_attempt_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox_messages m
    SET claimed_until = CASE WHEN next.expired THEN NULL
                             ELSE now() + make_interval(secs => {float(config.MAIL_CLAIM_SECONDS)}) END,
        attempts = m.attempts + CASE WHEN next.expired THEN 0 ELSE 1 END,
        outcome = CASE WHEN next.expired THEN 'expired' END,
        finished_at = CASE WHEN next.expired THEN now() END
    FROM next
    WHERE m.id = next.id
    RETURNING m.id, m.kind, m.recipient, m.user_id, m.created_at, m.attempts, next.expired, m.last_error,
              m.client_address, m.details, m.cleaning_id;
"""

ACCOUNT_COLUMNS = "id, username, email, email_verified, is_active, token_version"

ACCOUNT_BY_ID_QUERY = f"SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = :user_id;"

ACCOUNT_BY_EMAIL_QUERY = f"SELECT {ACCOUNT_COLUMNS} FROM users WHERE lower(email) = lower(:email);"

# An offer mail's recipient as they are now (a deleted account gets nothing), whether they still
# want this kind, and the cleaning's name (NULL: the cleaning is gone).
OFFER_MAIL_RECIPIENT_QUERY = f"""
    SELECT {", ".join(f"u.{column.strip()}" for column in ACCOUNT_COLUMNS.split(","))},
           coalesce(p.enabled, true) AS wanted, c.name AS cleaning_name
    FROM users u
    LEFT JOIN notification_preferences p ON p.user_id = u.id AND p.kind = :kind
    LEFT JOIN cleanings c ON c.id = :cleaning_id
    WHERE u.id = :user_id AND u.deleted_at IS NULL;
"""

# The users an offer mail names, in its order, with their offer on the cleaning as it is now (no
# offer: withdrawn). A deleted user shows as its tombstone (deleted-user.<id>).
OFFER_MAIL_USERS_QUERY = """
    SELECT listed.user_id, u.username, o.status, o.created_at
    FROM unnest(CAST(:user_ids AS integer[])) WITH ORDINALITY AS listed (user_id, n)
    JOIN users u ON u.id = listed.user_id
    LEFT JOIN user_offers_for_cleanings o ON o.cleaning_id = :cleaning_id AND o.user_id = listed.user_id
    ORDER BY listed.n;
"""

# A message sent again (its first send failed, or its worker died) carries a new token: the
# one minted for the earlier try is replaced, since nobody may have received it.
MINT_TOKEN_QUERY = """
    INSERT INTO account_tokens (message_id, purpose, user_id, token_hash, email, token_version, expires_at)
    VALUES (:message_id, :purpose, :user_id, :token_hash, :email, :token_version,
            now() + make_interval(mins => :minutes))
    ON CONFLICT (message_id) DO UPDATE
    SET token_hash = EXCLUDED.token_hash, created_at = now(), expires_at = EXCLUDED.expires_at;
"""

FINISH_QUERY = """
    UPDATE outbox_messages
    SET outcome = :outcome, finished_at = now(), claimed_until = NULL, last_error = :error
    WHERE id = :id;
"""

# The next try comes no later than the message's end of life, where the claim records it expired.
RETRY_QUERY = f"""
    UPDATE outbox_messages
    SET claimed_until = NULL, last_error = :error,
        next_attempt_at = least(now() + make_interval(secs => :delay), {END_OF_LIFE})
    WHERE id = :id;
"""

# Back in the queue in its place, the try not counted: the server refused our settings, not this
# message, or the worker stopped before the send was done. (A stop keeps the last error of a real try.)
RELEASE_QUERY = """
    UPDATE outbox_messages
    SET claimed_until = NULL, last_error = coalesce(:error, last_error), attempts = greatest(attempts - 1, 0)
    WHERE id = :id AND outcome IS NULL;
"""

WAITING_COUNT_QUERY = "SELECT count(*) FROM outbox_messages WHERE outcome IS NULL;"

# For /metrics: the due messages (through the due index, where only unsettled messages are) and
# how long ago the oldest of them was asked for.
DUE_SUMMARY_QUERY = """
    SELECT count(*) AS due, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest_age_seconds
    FROM outbox_messages
    WHERE outcome IS NULL AND next_attempt_at <= now();
"""

# A token's use: spent at most once, and only while it is valid and still bound to what it acts on.
USE_VERIFICATION_TOKEN_QUERY = """
    WITH spent AS (
        UPDATE account_tokens SET used_at = now()
        WHERE token_hash = :token_hash AND purpose = 'email_verification'
          AND used_at IS NULL AND expires_at > now()
        RETURNING user_id, email
    )
    UPDATE users u SET email_verified = true
    FROM spent
    WHERE u.id = spent.user_id AND u.email = spent.email AND u.is_active
    RETURNING u.id, u.email;
"""

VALID_RESET_TOKEN_QUERY = """
    SELECT t.user_id
    FROM account_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = :token_hash AND t.purpose = 'password_reset'
      AND t.used_at IS NULL AND t.expires_at > now()
      AND u.token_version = t.token_version AND u.is_active;
"""

# Spends the token and sets the password, or neither: bumping the token version refuses every
# older access token (and every other reset token), and every session ends (`sessions_ended`: how
# many of them were alive, for the metrics).
USE_RESET_TOKEN_QUERY = f"""
    WITH spent AS (
        UPDATE account_tokens t SET used_at = now()
        FROM users u
        WHERE t.token_hash = :token_hash AND t.purpose = 'password_reset'
          AND t.used_at IS NULL AND t.expires_at > now()
          AND u.id = t.user_id AND u.token_version = t.token_version AND u.is_active
        RETURNING t.user_id
    ), changed AS (
        UPDATE users SET password = :password, salt = :salt, token_version = token_version + 1
        WHERE id = (SELECT user_id FROM spent)
        RETURNING id
    ), sessions_ended AS (
        UPDATE sessions SET ended_at = now(), end_reason = 'password_reset'
        WHERE user_id = (SELECT id FROM changed) AND ended_at IS NULL
        RETURNING expires_at, last_used_at
    )
    SELECT id, {alive_ended_count("sessions_ended")} AS sessions_ended FROM changed;
"""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    kind: MailKind
    recipient: str
    user_id: int | None
    created_at: datetime
    attempts: int
    expired: bool = False  # past its end of life: recorded `expired` by the claim, not to be sent
    last_error: str | None = None
    client_address: str | None = None  # where the request that caused it came from
    details: Mapping[str, str] | None = None  # what a notice says (app/services/notices.py), whom an offer mail names
    cleaning_id: int | None = None  # the cleaning an offer mail is about


@dataclass(frozen=True, slots=True)
class MailAccount:
    """What a mail needs to know of its account."""

    id: int
    username: str
    email: str
    email_verified: bool
    is_active: bool
    token_version: int


@dataclass(frozen=True, slots=True)
class OfferMailUser:
    """Someone an offer mail names, and their offer on its cleaning now (None: withdrawn)."""

    user_id: int
    username: str
    status: str | None
    offered_at: datetime | None


@dataclass(frozen=True, slots=True)
class OfferMailContent:
    """What an offer mail says, read when it is sent: the cleaning, and whom it names (the new
    offers' makers in a digest; the owner or the cleaner otherwise)."""

    cleaning_id: int
    cleaning_name: str
    users: tuple[OfferMailUser, ...]


@dataclass(frozen=True, slots=True)
class PreparedMail:
    """A message ready to send: to whom, for which account, with which token (never stored).
    A notice has neither account nor token: what it says was written with it. An offer mail has
    its account and what it says (its unsubscribe token is signed as it is written)."""

    message: OutboxMessage
    user: MailAccount | None
    token: str | None
    offer: OfferMailContent | None = None


def offer_mail_user_ids(details: Mapping[str, str] | None) -> list[int]:
    """The users an offer mail names: its `users`, ids separated by spaces (a digest's grow as offers join it)."""
    return [int(word) for word in (details or {}).get("users", "").split()]


class OutboxRepository(BaseRepository):
    async def enqueue(
        self,
        *,
        kind: MailKind,
        recipient: str,
        user_id: int | None,
        client_address: str | None = None,
        details: Mapping[str, str] | None = None,
    ) -> int:
        """Store a message to send. Call it inside the transaction of what causes the message."""
        values = {
            "kind": kind.value,
            "recipient": recipient,
            "user_id": user_id,
            "client_address": client_address,
            "details": json.dumps(dict(details)) if details is not None else None,
        }
        return int(await self.db.fetch_val(ENQUEUE_QUERY, values))

    async def claim_next(self) -> OutboxMessage | None:
        record = await self.db.fetch_one(CLAIM_QUERY)
        if record is None:
            return None
        row = dict(as_dict(record))
        row["kind"] = MailKind(row["kind"])
        row["details"] = json.loads(row["details"]) if row["details"] is not None else None
        return OutboxMessage(**row)

    async def prepare(self, message: OutboxMessage) -> PreparedMail | None:
        """The account a message is for and a new token for it; None when it should not be sent
        any more (the account is gone or inactive, the email changed or is verified already).
        A notice is sent as it was written, to the address it was written for: no token.
        An offer mail goes to its account's address now, if the account still wants that kind."""
        if message.kind in OFFER_KINDS:
            return await self._prepare_offer_mail(message)
        if message.kind not in TOKEN_KINDS:
            return PreparedMail(message=message, user=None, token=None)
        user = await self._recipient_account(message)
        if user is None:
            return None
        token = new_random_token()
        verification = message.kind is MailKind.email_verification
        await self.db.execute(
            MINT_TOKEN_QUERY,
            {
                "message_id": message.id,
                "purpose": message.kind.value,
                "user_id": user.id,
                "token_hash": random_token_hash(token),
                "email": user.email if verification else None,
                "token_version": None if verification else user.token_version,
                "minutes": TOKEN_MINUTES[message.kind],
            },
        )
        return PreparedMail(message=message, user=user, token=token)

    async def _prepare_offer_mail(self, message: OutboxMessage) -> PreparedMail | None:
        """None (skipped) when the account is gone or inactive, no longer wants this kind, or a
        digest's cleaning is gone (nothing left to look at); else the account and what to say."""
        values = {"kind": message.kind.value, "user_id": message.user_id, "cleaning_id": message.cleaning_id}
        record = await self.db.fetch_one(OFFER_MAIL_RECIPIENT_QUERY, values)
        if record is None or message.cleaning_id is None:
            return None
        row = as_dict(record)
        user = MailAccount(**{field: row[field] for field in MailAccount.__dataclass_fields__})
        if not user.is_active or not row["wanted"]:
            return None
        details = message.details or {}
        cleaning_name = row["cleaning_name"] or details.get("cleaning_name")
        if cleaning_name is None or (message.kind is MailKind.offer_received and row["cleaning_name"] is None):
            return None
        listed = await self.db.fetch_all(
            OFFER_MAIL_USERS_QUERY,
            {"user_ids": offer_mail_user_ids(details), "cleaning_id": message.cleaning_id},
        )
        users = tuple(
            OfferMailUser(
                user_id=int(named["user_id"]),
                username=str(named["username"]),
                status=named["status"],
                offered_at=named["created_at"],
            )
            for named in listed
        )
        content = OfferMailContent(cleaning_id=message.cleaning_id, cleaning_name=str(cleaning_name), users=users)
        return PreparedMail(message=message, user=user, token=None, offer=content)

    async def account(self, *, user_id: int) -> MailAccount | None:
        record = await self.db.fetch_one(ACCOUNT_BY_ID_QUERY, {"user_id": user_id})
        return MailAccount(**as_dict(record)) if record else None

    async def _recipient_account(self, message: OutboxMessage) -> MailAccount | None:
        if message.kind is MailKind.email_verification:
            record = await self.db.fetch_one(ACCOUNT_BY_ID_QUERY, {"user_id": message.user_id})
        else:  # a reset names an email, which may be no one's
            record = await self.db.fetch_one(ACCOUNT_BY_EMAIL_QUERY, {"email": message.recipient})
        user = MailAccount(**as_dict(record)) if record else None
        if user is None or not user.is_active:
            return None
        if message.kind is MailKind.email_verification and (
            user.email.lower() != message.recipient.lower() or user.email_verified
        ):
            return None
        return user

    async def finish(self, message_id: int, *, outcome: str, error: str | None = None) -> None:
        await self.db.execute(FINISH_QUERY, {"id": message_id, "outcome": outcome, "error": error})

    async def retry_later(self, message_id: int, *, delay: float, error: str) -> None:
        await self.db.execute(RETRY_QUERY, {"id": message_id, "delay": delay, "error": error[:500]})

    async def release(self, message_id: int, *, error: str | None = None) -> None:
        """Put a claimed message back, due as it was, its try not counted (a settled one stays settled)."""
        await self.db.execute(RELEASE_QUERY, {"id": message_id, "error": error[:500] if error is not None else None})

    async def count_waiting(self) -> int:
        return int(await self.db.fetch_val(WAITING_COUNT_QUERY))

    async def due_summary(self) -> tuple[int, float]:
        """How many messages are due to be sent, and the age in seconds of the oldest of them (0 when none)."""
        record = await self.db.fetch_one(DUE_SUMMARY_QUERY)
        assert record is not None  # an aggregate always answers one row
        return int(record["due"]), float(record["oldest_age_seconds"])

    async def verify_email(self, *, token: str) -> tuple[int, str] | None:
        """Spend a verification token: the user id and the email it verified, or None."""
        token_hash = random_token_hash(token)
        if token_hash is None:
            return None
        record = await self.db.fetch_one(USE_VERIFICATION_TOKEN_QUERY, {"token_hash": token_hash})
        return (int(record["id"]), str(record["email"])) if record else None

    async def reset_token_is_valid(self, *, token: str) -> bool:
        token_hash = random_token_hash(token)
        return (
            token_hash is not None
            and await self.db.fetch_one(VALID_RESET_TOKEN_QUERY, {"token_hash": token_hash}) is not None
        )

    async def reset_password(self, *, token: str, password: str, salt: str) -> int | None:
        """Spend a reset token and set the new password: the user's id, or None."""
        token_hash = random_token_hash(token)
        if token_hash is None:
            return None
        values: dict[str, Any] = {"token_hash": token_hash, "password": password, "salt": salt}
        record = await self.db.fetch_one(USE_RESET_TOKEN_QUERY, values)
        if record is None:
            return None
        # Counted as the statement runs: its caller's transaction holds nothing more that can fail
        # (the notice of the change), so it commits too.
        metrics.count_sessions_ended(SessionEndReason.password_reset.value, int(record["sessions_ended"]))
        return int(record["id"])
