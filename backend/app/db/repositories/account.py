"""Leaving Phresh: an account's deletion, and the export of everything Phresh holds about it.

A deleted account stays as a tombstone: its `users` row, emptied of everything personal (see
revision 8e3a7d5b1c46 and `deleted_username` in app/models/user.py). What others still need keeps
its foreign keys, and every answer that embeds the user shows the tombstone instead:

- its sessions are deleted and its token version bumped: every token it had is refused at once;
- its profile, second factor and recovery codes are deleted;
- its cleanings without an accepted or completed offer are deleted, with their offers; one with
  an accepted or completed offer stays for the cleaner (its still pending offers are rejected:
  nobody can accept them any more);
- its offers on others' cleanings: pending ones are withdrawn (deleted, as a rescind does); an
  accepted one is cancelled, as when a cleaner backs out (the cleaning's rejected offers are
  pending again); rejected, cancelled and completed ones stay in their cleaning's history;
- the evaluations it wrote stay (they belong to its kept cleanings), so cleaners' statistics do
  not change; the evaluations it received go, and with them its statistics as a cleaner;
- its mail in the outbox is kept as sent or skipped, addressed to the tombstone; the audit
  trail's events about it keep their user id, kind, time and request id, but no client address
  or detail; the deletion itself is recorded with counts only.

Everything runs in one transaction that first locks every cleaning the deletion touches (in id
order), then the user's row, so an accept, a cancel or a new offer on one of them, or a login,
waits for it or comes first: never between. Cleanings come first, as in every change to offers:
such a change writes its mail under the lock on its cleaning, and the mail's row refers to its
recipient's user row (app/db/repositories/notifications.py), so a deletion that held the user's row
while it waited for a cleaning would deadlock with it. The cleanings are locked again once the user's
row is: the user can make no new offer from then on, and one made meanwhile is locked too.
"""

from datetime import UTC, datetime
from typing import Any, NamedTuple

from databases import Database

from app.core import config
from app.db.repositories.base import BaseRepository, as_dict
from app.db.repositories.notifications import NotificationsRepository
from app.db.repositories.outbox import MailKind
from app.db.repositories.security_events import SecurityEventsRepository
from app.models.account import AccountDeleted
from app.models.export import (
    EXPORT_FORMAT,
    AccountExport,
    ExportedAccount,
    ExportedCleaning,
    ExportedEvaluation,
    ExportedMail,
    ExportedOffer,
    ExportedProfile,
    ExportedSecondFactor,
    ExportedSecurityEvent,
    ExportedSession,
)
from app.models.security_event import SecurityEventKind
from app.models.user import deleted_email, deleted_username


class AccountGoneError(Exception):
    """The account was deleted already (by a request that came first)."""


class FormerAccount(NamedTuple):
    """A deleted account's names as they were when the deletion locked it: where its notice goes."""

    id: int
    username: str
    email: str


LOCK_USER_QUERY = """
    SELECT id, username, email FROM users WHERE id = :user_id AND deleted_at IS NULL FOR UPDATE;
"""

# Every cleaning the deletion changes: the user's own, and those the user made an offer on.
LOCK_CLEANINGS_QUERY = """
    SELECT id FROM cleanings
    WHERE owner = :user_id
       OR id IN (SELECT cleaning_id FROM user_offers_for_cleanings WHERE user_id = :user_id)
    ORDER BY id
    FOR UPDATE;
"""

AGREED = "status IN ('accepted', 'completed')"

DELETE_UNAGREED_CLEANINGS_QUERY = f"""
    DELETE FROM cleanings c
    WHERE c.owner = :user_id
      AND NOT EXISTS (SELECT 1 FROM user_offers_for_cleanings o WHERE o.cleaning_id = c.id AND o.{AGREED})
    RETURNING id;
"""

# On the cleanings that stay, the offers nobody can accept any more: which, to tell their cleaners.
REJECT_OFFERS_ON_KEPT_CLEANINGS_QUERY = """
    UPDATE user_offers_for_cleanings o SET status = 'rejected'
    FROM cleanings c
    WHERE c.id = o.cleaning_id AND c.owner = :user_id AND o.status = 'pending'
    RETURNING o.cleaning_id, o.user_id;
"""

COUNT_KEPT_CLEANINGS_QUERY = "SELECT count(*) FROM cleanings WHERE owner = :user_id;"

WITHDRAW_PENDING_OFFERS_QUERY = """
    WITH withdrawn AS (
        DELETE FROM user_offers_for_cleanings WHERE user_id = :user_id AND status = 'pending' RETURNING 1
    )
    SELECT count(*) FROM withdrawn;
"""

# As `cancel_offer` does: the cleaner backs out, and the cleaning's rejected offers are pending again.
BACK_OUT_OF_ACCEPTED_OFFERS_QUERY = """
    WITH cancelled AS (
        UPDATE user_offers_for_cleanings SET status = 'cancelled'
        WHERE user_id = :user_id AND status = 'accepted'
        RETURNING cleaning_id
    ), reopened AS (
        UPDATE user_offers_for_cleanings o SET status = 'pending'
        FROM cancelled
        WHERE o.cleaning_id = cancelled.cleaning_id AND o.status = 'rejected'
    )
    SELECT cleaning_id FROM cancelled;
"""

COUNT_OFFERS_KEPT_QUERY = """
    SELECT count(*) FROM user_offers_for_cleanings WHERE user_id = :user_id;
"""

DELETE_EVALUATIONS_RECEIVED_QUERY = """
    WITH deleted AS (
        DELETE FROM cleaning_to_cleaner_evaluations WHERE cleaner_id = :user_id RETURNING 1
    )
    SELECT count(*) FROM deleted;
"""

DELETE_PROFILE_QUERY = "DELETE FROM profiles WHERE user_id = :user_id;"

IDLE = f"make_interval(mins => {int(config.SESSION_IDLE_TIMEOUT_MINUTES)})"

# The sessions go (and their refresh tokens with them); how many were alive, for the metrics.
DELETE_SESSIONS_QUERY = f"""
    WITH deleted AS (
        DELETE FROM sessions WHERE user_id = :user_id RETURNING ended_at, expires_at, last_used_at
    )
    SELECT count(*) FROM deleted
    WHERE ended_at IS NULL AND expires_at > now() AND last_used_at > now() - {IDLE};
"""

DELETE_SECOND_FACTOR_QUERIES = (
    "DELETE FROM mfa_challenges WHERE user_id = :user_id;",
    "DELETE FROM recovery_codes WHERE user_id = :user_id;",
    "DELETE FROM second_factors WHERE user_id = :user_id;",
)

# Mail of the account: nothing more is sent, and what was is kept addressed to the tombstone.
# (The notice of the deletion itself has no user id: it goes to the address the account had.)
SCRUB_MAIL_QUERIES = (
    "DELETE FROM account_tokens WHERE user_id = :user_id;",
    """
    UPDATE outbox_messages
    SET recipient = :email, client_address = NULL, details = NULL,
        outcome = coalesce(outcome, 'skipped'), finished_at = coalesce(finished_at, now())
    WHERE user_id = :user_id;
    """,
)

SCRUB_SECURITY_EVENTS_QUERY = """
    UPDATE security_events SET client_address = NULL, detail = NULL WHERE user_id = :user_id;
"""

# The tombstone: names nobody can register or log in with, a password that matches nothing (no
# hash scheme reads it), inactive, every token refused.
TOMBSTONE_QUERY = """
    UPDATE users
    SET username = :username,
        email = :email,
        email_verified = false,
        password = '!deleted',
        salt = '',
        is_active = false,
        is_superuser = false,
        token_version = token_version + 1,
        deleted_at = now()
    WHERE id = :user_id;
"""

# --- The export -------------------------------------------------------------------------------

EXPORT_ACCOUNT_QUERY = """
    SELECT id, username, email, email_verified, is_active, is_superuser, created_at, updated_at
    FROM users WHERE id = :user_id AND deleted_at IS NULL;
"""

EXPORT_PROFILE_QUERY = """
    SELECT full_name, phone_number, bio, image, created_at, updated_at FROM profiles WHERE user_id = :user_id;
"""

EXPORT_CLEANINGS_QUERY = """
    SELECT id, name, description, price, cleaning_type, created_at, updated_at
    FROM cleanings WHERE owner = :user_id ORDER BY id;
"""

_OFFER_COLUMNS = """
    o.cleaning_id, c.name AS cleaning_name, o.user_id, u.username, o.status, o.created_at, o.updated_at
    FROM user_offers_for_cleanings o
    JOIN cleanings c ON c.id = o.cleaning_id
    JOIN users u ON u.id = o.user_id
"""

EXPORT_OFFERS_MADE_QUERY = f"SELECT {_OFFER_COLUMNS} WHERE o.user_id = :user_id ORDER BY o.created_at, o.cleaning_id;"

EXPORT_OFFERS_RECEIVED_QUERY = (
    f"SELECT {_OFFER_COLUMNS} WHERE c.owner = :user_id ORDER BY o.created_at, o.cleaning_id, o.user_id;"
)

_EVALUATION_COLUMNS = """
    e.cleaning_id, c.name AS cleaning_name, e.cleaner_id, u.username AS cleaner_username, e.no_show,
    e.headline, e.comment, e.professionalism, e.completeness, e.efficiency, e.overall_rating,
    e.created_at, e.updated_at
    FROM cleaning_to_cleaner_evaluations e
    JOIN cleanings c ON c.id = e.cleaning_id
    JOIN users u ON u.id = e.cleaner_id
"""

EXPORT_EVALUATIONS_GIVEN_QUERY = (
    f"SELECT {_EVALUATION_COLUMNS} WHERE c.owner = :user_id ORDER BY e.created_at, e.cleaning_id, e.cleaner_id;"
)

EXPORT_EVALUATIONS_RECEIVED_QUERY = (
    f"SELECT {_EVALUATION_COLUMNS} WHERE e.cleaner_id = :user_id ORDER BY e.created_at, e.cleaning_id;"
)

# Every session row, live or ended (never a refresh token: only their hashes are stored anyway).
EXPORT_SESSIONS_QUERY = """
    SELECT id, created_at, last_used_at, expires_at, ended_at, end_reason, client_address, user_agent
    FROM sessions WHERE user_id = :user_id ORDER BY created_at, id;
"""

EXPORT_SECURITY_EVENTS_QUERY = """
    SELECT created_at, kind, client_address, detail, request_id
    FROM security_events WHERE user_id = :user_id ORDER BY id;
"""

# The mail sent (or to be sent) for the account, and the password resets asked for its address
# (which name no account until sent): never the token a message carried (only its hash is stored,
# in account_tokens, which is not read here).
EXPORT_MAIL_QUERY = """
    SELECT kind, recipient, created_at, outcome, finished_at, details
    FROM outbox_messages
    WHERE user_id = :user_id
       OR (user_id IS NULL AND kind = 'password_reset'
           AND lower(recipient) = (SELECT lower(email) FROM users WHERE id = :user_id))
    ORDER BY id;
"""

# Whether the second factor is on: never its secret, nor the recovery codes' hashes.
EXPORT_SECOND_FACTOR_QUERY = """
    SELECT f.created_at, f.enabled_at,
           (SELECT count(*) FROM recovery_codes r WHERE r.user_id = f.user_id AND r.used_at IS NULL)
               AS recovery_codes_left
    FROM second_factors f WHERE f.user_id = :user_id;
"""


class AccountRepository(BaseRepository):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.notifications = NotificationsRepository(db)

    async def _count(self, query: str, values: dict[str, Any]) -> int:
        return int(await self.db.fetch_val(query=query, values=values) or 0)

    async def delete_account(self, *, user_id: int) -> tuple[AccountDeleted, FormerAccount]:
        """Delete the account as the module says, in one transaction (the caller's, when it has
        one: the notice of the deletion is written in it too). What it did, and the names the
        account had; AccountGoneError if it is gone already."""
        values = {"user_id": user_id}
        async with self.db.transaction():
            await self.db.fetch_all(query=LOCK_CLEANINGS_QUERY, values=values)
            locked = await self.db.fetch_one(query=LOCK_USER_QUERY, values=values)
            if locked is None:
                raise AccountGoneError
            former = FormerAccount(**as_dict(locked))
            await self.db.fetch_all(query=LOCK_CLEANINGS_QUERY, values=values)  # and one offered on meanwhile
            cleanings_deleted = len(await self.db.fetch_all(query=DELETE_UNAGREED_CLEANINGS_QUERY, values=values))
            rejected = await self.db.fetch_all(query=REJECT_OFFERS_ON_KEPT_CLEANINGS_QUERY, values=values)
            offers_withdrawn = await self._count(WITHDRAW_PENDING_OFFERS_QUERY, values)
            backed_out = await self.db.fetch_all(query=BACK_OUT_OF_ACCEPTED_OFFERS_QUERY, values=values)
            await self._tell_the_others(user_id, rejected=rejected, backed_out=backed_out)
            deleted = AccountDeleted(
                cleanings_deleted=cleanings_deleted,
                cleanings_kept=await self._count(COUNT_KEPT_CLEANINGS_QUERY, values),
                offers_withdrawn=offers_withdrawn,
                offers_backed_out=len(backed_out),
                offers_kept=await self._count(COUNT_OFFERS_KEPT_QUERY, values),
                evaluations_received_deleted=await self._count(DELETE_EVALUATIONS_RECEIVED_QUERY, values),
                sessions_ended=await self._count(DELETE_SESSIONS_QUERY, values),
            )
            await self.db.execute(query=DELETE_PROFILE_QUERY, values=values)
            for query in DELETE_SECOND_FACTOR_QUERIES:
                await self.db.execute(query=query, values=values)
            for query in SCRUB_MAIL_QUERIES:
                mail_values = {**values, "email": deleted_email(user_id)} if ":email" in query else values
                await self.db.execute(query=query, values=mail_values)
            await self.db.execute(query=SCRUB_SECURITY_EVENTS_QUERY, values=values)
            await self.db.execute(
                query=TOMBSTONE_QUERY,
                values={**values, "username": deleted_username(user_id), "email": deleted_email(user_id)},
            )
            await SecurityEventsRepository(self.db).record(
                kind=SecurityEventKind.account_deleted, user_id=user_id, detail=deleted.summary()
            )
        return deleted, former

    async def _tell_the_others(self, user_id: int, *, rejected: list[Any], backed_out: list[Any]) -> None:
        """The offer mails the deletion's changes call for, in its transaction, as the offer routes
        send them: each cleaner whose pending offer on a kept cleaning is now rejected, and the
        owner of each cleaning whose accepted cleaner (the leaver) backed out."""
        by_cleaning: dict[int, list[int]] = {}
        for row in rejected:
            by_cleaning.setdefault(int(row["cleaning_id"]), []).append(int(row["user_id"]))
        for cleaning_id, cleaner_ids in by_cleaning.items():
            await self.notifications.queue_to_cleaners(
                kind=MailKind.offer_rejected, cleaning_id=cleaning_id, cleaner_ids=cleaner_ids
            )
        for row in backed_out:
            await self.notifications.queue_to_owner(
                kind=MailKind.offer_cancelled, cleaning_id=int(row["cleaning_id"]), cleaner_id=user_id
            )

    async def export_account(self, *, user_id: int) -> AccountExport | None:
        """Everything Phresh holds about the account, read in one snapshot; None if it is gone."""
        values = {"user_id": user_id}
        async with self.db.transaction(isolation="repeatable_read"):
            account = await self.db.fetch_one(query=EXPORT_ACCOUNT_QUERY, values=values)
            if account is None:
                return None
            profile = await self.db.fetch_one(query=EXPORT_PROFILE_QUERY, values=values)
            second_factor = await self.db.fetch_one(query=EXPORT_SECOND_FACTOR_QUERY, values=values)

            async def rows(query: str) -> list[dict[str, Any]]:
                return [dict(as_dict(record)) for record in await self.db.fetch_all(query=query, values=values)]

            export = AccountExport(
                format=EXPORT_FORMAT,
                exported_at=datetime.now(UTC),
                account=ExportedAccount.model_validate(as_dict(account)),
                profile=ExportedProfile.model_validate(as_dict(profile)) if profile else None,
                cleanings=[ExportedCleaning.model_validate(row) for row in await rows(EXPORT_CLEANINGS_QUERY)],
                offers_made=[ExportedOffer.model_validate(row) for row in await rows(EXPORT_OFFERS_MADE_QUERY)],
                offers_received=[ExportedOffer.model_validate(row) for row in await rows(EXPORT_OFFERS_RECEIVED_QUERY)],
                evaluations_given=[
                    ExportedEvaluation.model_validate(row) for row in await rows(EXPORT_EVALUATIONS_GIVEN_QUERY)
                ],
                evaluations_received=[
                    ExportedEvaluation.model_validate(row) for row in await rows(EXPORT_EVALUATIONS_RECEIVED_QUERY)
                ],
                sessions=[ExportedSession.model_validate(row) for row in await rows(EXPORT_SESSIONS_QUERY)],
                security_events=[
                    ExportedSecurityEvent.model_validate(row) for row in await rows(EXPORT_SECURITY_EVENTS_QUERY)
                ],
                mail=[ExportedMail.model_validate(row) for row in await rows(EXPORT_MAIL_QUERY)],
                second_factor=ExportedSecondFactor.from_row(as_dict(second_factor) if second_factor else None),
            )
        return export
