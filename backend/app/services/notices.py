"""Account notices: a mail to the account's address when something about the account changes
(its password, its email, its second factor, the account itself). Each is written to the mail
outbox in the transaction of the change, so that a change is never made without its notice nor
a notice sent for a change that was rolled back. A notice carries no link or token: only what
happened, when, from where, and where to get help (app/services/mail.py writes it)."""

from enum import StrEnum
from typing import Protocol

from databases import Database

from app.db.repositories.outbox import MailKind, OutboxRepository


class NoticeKind(StrEnum):
    password_changed = "password_changed"
    email_changed = "email_changed"
    mfa_enabled = "mfa_enabled"
    mfa_disabled = "mfa_disabled"
    mfa_reset = "mfa_reset"
    account_deleted = "account_deleted"


class Account(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def username(self) -> str | None: ...
    @property
    def email(self) -> str | None: ...


async def queue_notice(
    db: Database,
    user: Account,
    kind: NoticeKind,
    *,
    client_address: str | None = None,
    recipient: str | None = None,
    **details: str,
) -> int:
    """Write a notice to the outbox, in the caller's transaction: to `recipient` (the user's
    address unless given: an email change tells the old one), with the user's name, the client
    address the change came from, and `details` for the message's text. Its outbox id.

    An `account_deleted` notice keeps no user id: the outbox's rows of a user go with the user.
    """
    address = recipient or user.email
    assert address is not None  # a stored user has an email
    return await OutboxRepository(db).enqueue(
        kind=MailKind(kind.value),
        recipient=address,
        user_id=None if kind is NoticeKind.account_deleted else user.id,
        client_address=client_address,
        details={"username": user.username or "", **details},
    )
