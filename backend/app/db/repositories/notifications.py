"""Mail about offers: which kinds each user wants, and the writing of each mail to the outbox.

Every mail is written by the statement below that runs inside the transaction of the offer change
it reports (app/db/repositories/offers.py, under the lock on the cleaning): a change that rolls
back takes its mail with it, and one that commits has its mail in the outbox, which the sender
sends whatever happens to the process meanwhile. A mail names people by their ids (details
`users`): what it says of them, and of the cleaning, is read when it is sent.

New offers on a cleaning are told to its owner in a digest: the first offer's mail is due at once;
an offer that comes while a digest of the cleaning waits to be sent joins it, and one that comes
after a digest went out starts the next, due OFFER_DIGEST_MINUTES after that one was sent. So an
owner gets at most one such mail per cleaning per OFFER_DIGEST_MINUTES, each listing what came in
since the one before. Offers on one cleaning are made one after the other (each locks the cleaning
first), so two at once never start two digests; and the sender's claim (FOR UPDATE SKIP LOCKED)
never takes a digest that an offer is joining before that offer commits, nor does an offer join
a digest once it is claimed (it starts the next one instead).
"""

from app.core import config
from app.db.repositories.base import BaseRepository
from app.db.repositories.outbox import MailKind
from app.models.notification import DEFAULT_ENABLED, NotificationKind, NotificationPreferences

# Nobody is mailed who has turned that kind off, nor a deleted account.
_WANTED = """
    u.deleted_at IS NULL
    AND NOT EXISTS (
        SELECT 1 FROM notification_preferences p WHERE p.user_id = u.id AND p.kind = :kind AND NOT p.enabled
    )
"""

# A new offer (by :offerer_id) on a cleaning: joins the cleaning's digest that waits to be sent
# (unclaimed), or starts one, due at once, or OFFER_DIGEST_MINUTES after the last one that was
# sent (or is being sent now). The join locks the digest's row until the offer commits.
QUEUE_OFFER_RECEIVED_QUERY = f"""
    WITH waiting AS (
        SELECT id FROM outbox_messages
        WHERE kind = 'offer_received' AND cleaning_id = :cleaning_id AND outcome IS NULL AND claimed_until IS NULL
        ORDER BY id
        LIMIT 1
        FOR UPDATE
    ), joined AS (
        UPDATE outbox_messages m
        SET details = jsonb_set(
            m.details, '{{users}}', to_jsonb(concat_ws(' ', m.details->>'users', CAST(:offerer_id AS text)))
        )
        FROM waiting
        WHERE m.id = waiting.id AND m.claimed_until IS NULL AND m.outcome IS NULL
        RETURNING m.id
    ), last_sent AS (
        SELECT max(coalesce(finished_at, now())) AS sent_at
        FROM outbox_messages
        WHERE kind = 'offer_received' AND cleaning_id = :cleaning_id AND (outcome IS NULL OR outcome = 'sent')
    )
    INSERT INTO outbox_messages (kind, recipient, user_id, cleaning_id, details, next_attempt_at)
    SELECT 'offer_received', u.email, u.id, c.id, jsonb_build_object('users', CAST(:offerer_id AS text)),
           greatest(now(), (SELECT sent_at FROM last_sent) + make_interval(mins => {int(config.OFFER_DIGEST_MINUTES)}))
    FROM cleanings c
    JOIN users u ON u.id = c.owner
    WHERE c.id = :cleaning_id AND NOT EXISTS (SELECT 1 FROM joined) AND {_WANTED}
    RETURNING id;
"""

# A decision on offers, told to the cleaners who made them (:cleaner_ids; accepted, rejected),
# naming the cleaning's owner. The cleaning's name is kept in case it is gone when the mail is sent.
QUEUE_TO_CLEANERS_QUERY = f"""
    INSERT INTO outbox_messages (kind, recipient, user_id, cleaning_id, details)
    SELECT :kind, u.email, u.id, c.id, jsonb_build_object('users', CAST(c.owner AS text), 'cleaning_name', c.name)
    FROM cleanings c
    JOIN users u ON u.id = ANY(CAST(:cleaner_ids AS integer[]))
    WHERE c.id = :cleaning_id AND c.owner IS NOT NULL AND {_WANTED}
    ORDER BY u.id;
"""

# A change to the accepted offer (cancelled), told to the cleaning's owner, naming the cleaner.
QUEUE_TO_OWNER_QUERY = f"""
    INSERT INTO outbox_messages (kind, recipient, user_id, cleaning_id, details)
    SELECT :kind, u.email, u.id, c.id, jsonb_build_object('users', CAST(:cleaner_id AS text), 'cleaning_name', c.name)
    FROM cleanings c
    JOIN users u ON u.id = c.owner
    WHERE c.id = :cleaning_id AND {_WANTED};
"""

GET_PREFERENCES_QUERY = """
    SELECT kind, enabled FROM notification_preferences WHERE user_id = :user_id;
"""

SET_PREFERENCES_QUERY = """
    INSERT INTO notification_preferences (user_id, kind, enabled)
    SELECT :user_id, kind, enabled
    FROM unnest(CAST(:kinds AS text[]), CAST(:enabled AS boolean[])) AS changed (kind, enabled)
    ON CONFLICT (user_id, kind) DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = now();
"""

# A kind turned off for a user who is still there: their name, or no row.
UNSUBSCRIBE_QUERY = """
    WITH account AS (
        SELECT id, username FROM users WHERE id = :user_id AND deleted_at IS NULL
    ), changed AS (
        INSERT INTO notification_preferences (user_id, kind, enabled)
        SELECT id, :kind, false FROM account
        ON CONFLICT (user_id, kind) DO UPDATE SET enabled = false, updated_at = now()
        RETURNING user_id
    )
    SELECT account.username FROM account JOIN changed ON changed.user_id = account.id;
"""

# Whether a user who is still there wants a kind: their name and that, or no row.
WANTS_QUERY = f"""
    SELECT u.username, coalesce(p.enabled, {str(DEFAULT_ENABLED).lower()}) AS enabled
    FROM users u
    LEFT JOIN notification_preferences p ON p.user_id = u.id AND p.kind = :kind
    WHERE u.id = :user_id AND u.deleted_at IS NULL;
"""


class NotificationsRepository(BaseRepository):
    async def get_preferences(self, *, user_id: int) -> NotificationPreferences:
        rows = await self.db.fetch_all(GET_PREFERENCES_QUERY, {"user_id": user_id})
        return NotificationPreferences.model_validate({row["kind"]: row["enabled"] for row in rows})

    async def update_preferences(
        self, *, user_id: int, changes: dict[NotificationKind, bool]
    ) -> NotificationPreferences:
        """Set the kinds `changes` names (the others stay as they are); the preferences now."""
        if changes:
            values = {
                "user_id": user_id,
                "kinds": [kind.value for kind in changes],
                "enabled": list(changes.values()),
            }
            await self.db.execute(SET_PREFERENCES_QUERY, values)
        return await self.get_preferences(user_id=user_id)

    async def unsubscribe(self, *, user_id: int, kind: NotificationKind) -> str | None:
        """Turn one kind off for the user: their username, or None if there is no such user (any more)."""
        username = await self.db.fetch_val(UNSUBSCRIBE_QUERY, {"user_id": user_id, "kind": kind.value})
        return str(username) if username is not None else None

    async def wants(self, *, user_id: int, kind: NotificationKind) -> tuple[str, bool] | None:
        """The user's name and whether they get this kind now; None if there is no such user (any more)."""
        record = await self.db.fetch_one(WANTS_QUERY, {"user_id": user_id, "kind": kind.value})
        return (str(record["username"]), bool(record["enabled"])) if record else None

    # Called inside the transaction of the offer change each reports (app/db/repositories/offers.py).

    async def queue_offer_received(self, *, cleaning_id: int, offerer_id: int) -> None:
        """Tell the cleaning's owner of a new offer: in the digest that waits, or a new one."""
        values = {"cleaning_id": cleaning_id, "offerer_id": str(offerer_id), "kind": MailKind.offer_received.value}
        await self.db.execute(QUEUE_OFFER_RECEIVED_QUERY, values)

    async def queue_to_cleaners(self, *, kind: MailKind, cleaning_id: int, cleaner_ids: list[int]) -> None:
        """Tell cleaners of a decision on their offers for the cleaning (accepted, rejected)."""
        if cleaner_ids:
            values = {"kind": kind.value, "cleaning_id": cleaning_id, "cleaner_ids": cleaner_ids}
            await self.db.execute(QUEUE_TO_CLEANERS_QUERY, values)

    async def queue_to_owner(self, *, kind: MailKind, cleaning_id: int, cleaner_id: int) -> None:
        """Tell the cleaning's owner of a change to the accepted offer, the cleaner's (cancelled)."""
        values = {"kind": kind.value, "cleaning_id": cleaning_id, "cleaner_id": str(cleaner_id)}
        await self.db.execute(QUEUE_TO_OWNER_QUERY, values)
