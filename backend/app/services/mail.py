"""Writing and sending the account mails: over SMTP (aiosmtplib), or, with no SMTP server
configured, as .eml files in a local outbox folder for a developer to read.

`MailSender` runs in every worker process beside the API. It takes due messages from the outbox
table one at a time (a claim no other worker can take), makes each message's token, sends it and
records the outcome; a send that fails is tried again later, with backoff, for as long as it takes.
"""

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

import aiosmtplib
from databases import Database

from app.core import config
from app.db.errors import DATABASE_UNAVAILABLE_ERRORS
from app.db.repositories.outbox import MailKind, OutboxMessage, OutboxRepository, PreparedMail

logger = logging.getLogger(__name__)

MAIL_SENDER_TASK = "phresh-mail-sender"

SUBJECTS = {
    MailKind.email_verification: "Confirm your email address for Phresh",
    MailKind.password_reset: "Reset your Phresh password",
}
LINK_PATHS = {MailKind.email_verification: "/verify-email", MailKind.password_reset: "/reset-password"}


def link_for(kind: MailKind, token: str) -> str:
    return f"{config.PUBLIC_APP_URL}{LINK_PATHS[kind]}?{urlencode({'token': token})}"


def compose(mail: PreparedMail) -> EmailMessage:
    """The message for a prepared outbox row. Its Message-ID names the outbox row, so a message
    sent twice (a worker that died between the server's acceptance and recording it) is one
    message to mail software that de-duplicates."""
    message = mail.message
    link = link_for(message.kind, mail.token)
    if message.kind is MailKind.email_verification:
        hours = config.EMAIL_VERIFICATION_TOKEN_MINUTES / 60
        text = (
            f"Hello {mail.user.username},\n\n"
            f"Please confirm that {mail.user.email} is your email address by opening this link:\n\n{link}\n\n"
            f"The link works once, for {hours:g} hours. If you did not sign up for Phresh, ignore this message.\n"
        )
    else:
        minutes = config.PASSWORD_RESET_TOKEN_MINUTES
        text = (
            f"Hello {mail.user.username},\n\n"
            f"Someone (we hope you) asked to reset the password of your Phresh account. To choose a new "
            f"password, open this link:\n\n{link}\n\n"
            f"The link works once, for {minutes} minutes, and stops working if your password changes in the "
            f"meantime. If you did not ask for this, ignore this message: your password stays as it is.\n"
        )
    email = EmailMessage()
    email["From"] = config.MAIL_FROM
    email["To"] = message.recipient if message.kind is MailKind.email_verification else mail.user.email
    email["Subject"] = SUBJECTS[message.kind]
    email["Date"] = format_datetime(datetime.now(UTC))
    email["Message-ID"] = f"<outbox-{message.id}.{int(message.created_at.timestamp())}@phresh.io>"
    email["X-Phresh-Kind"] = message.kind.value
    # Plain 7-bit when it can be (usernames are ASCII; an address may not be): readable as it is stored.
    email.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    return email


class PermanentMailError(Exception):
    """A mail server refused the message for good (a 5xx): sending it again would not help."""


class Transport(Protocol):
    async def send(self, email: EmailMessage) -> None: ...


class SmtpTransport:
    async def send(self, email: EmailMessage) -> None:
        start_tls = {"auto": None, "true": True, "false": False}[config.SMTP_STARTTLS]
        try:
            await aiosmtplib.send(
                email,
                hostname=config.SMTP_HOST,
                port=config.SMTP_PORT,
                username=config.SMTP_USERNAME or None,
                password=str(config.SMTP_PASSWORD) or None,
                use_tls=config.SMTP_TLS,
                start_tls=False if config.SMTP_TLS else start_tls,
                timeout=config.SMTP_TIMEOUT_SECONDS,
            )
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPSenderRefused) as exc:
            raise PermanentMailError(str(exc)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentMailError(str(exc)) from exc
            raise


class FileTransport:
    """Writes each message to `<MAIL_OUTBOX_DIR>/<time>-<outbox id>-<kind>.eml`: the two-command
    start's mail server. Written to a temporary name first, so no reader sees half a message."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, email: EmailMessage) -> None:
        await asyncio.to_thread(self._write, email)

    def _write(self, email: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        outbox_id = str(email["Message-ID"]).strip("<>").split(".")[0]
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{outbox_id}-{email['X-Phresh-Kind']}.eml"
        path = self.directory / name
        partial = path.with_suffix(".partial")
        partial.write_bytes(bytes(email))
        os.replace(partial, path)
        logger.warning("no SMTP server configured (SMTP_HOST): mail to %s written to %s", email["To"], path)


def configured_transport() -> Transport:
    return SmtpTransport() if config.SMTP_HOST else FileTransport(config.MAIL_OUTBOX_DIR)


def retry_delay(attempts: int) -> float:
    """Seconds before the next try: doubling from MAIL_RETRY_BASE_SECONDS, capped, with jitter so
    that workers that failed together do not retry together."""
    delay = min(config.MAIL_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1), config.MAIL_RETRY_MAX_SECONDS)
    return float(delay * random.uniform(0.8, 1.0))  # noqa: S311 (jitter, not a secret)


class MailSender:
    """Sends what the outbox holds, in the background of one worker process."""

    def __init__(self, db: Database, transport: Transport | None = None) -> None:
        self.outbox = OutboxRepository(db)
        self.transport = transport or configured_transport()
        self._wake = asyncio.Event()
        self._busy = asyncio.Lock()  # held while a message is handled
        self._task: asyncio.Task[None] | None = None
        self.on_sent: Callable[[OutboxMessage], None] | None = None  # for tests and operators

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=MAIL_SENDER_TASK)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No message is handled by this sender inside the block (one in hand is finished first)."""
        async with self._busy:
            yield

    def wake(self) -> None:
        """A message was just enqueued here: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                async with self._busy:
                    busy = await self.send_next()
            except asyncio.CancelledError:
                raise
            except DATABASE_UNAVAILABLE_ERRORS as exc:
                logger.warning("mail sender: the database is unavailable (%s); trying again", type(exc).__name__)
                busy = False
            except Exception:  # never let one bad message stop the sender for good
                logger.exception("mail sender: unexpected error")
                busy = False
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=config.MAIL_POLL_SECONDS)

    async def send_next(self) -> bool:
        """Claim, prepare and send one due message; whether there was one."""
        message = await self.outbox.claim_next()
        if message is None:
            return False
        prepared = await self.outbox.prepare(message)
        if prepared is None:
            await self.outbox.finish(message.id, outcome="skipped")
            return True
        try:
            await self.transport.send(compose(prepared))
        except PermanentMailError as exc:
            logger.error("mail %s to %s refused for good: %s", message.id, message.recipient, exc)
            await self.outbox.finish(message.id, outcome="failed", error=str(exc)[:500])
            return True
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            delay = retry_delay(message.attempts)
            logger.warning("mail %s not sent (%s); trying again in %.1f s", message.id, type(exc).__name__, delay)
            await self.outbox.retry_later(message.id, delay=delay, error=f"{type(exc).__name__}: {exc}")
            return True
        await self.outbox.finish(message.id, outcome="sent")
        if self.on_sent is not None:
            self.on_sent(message)
        return True
