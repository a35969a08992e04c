"""Writing and sending the account mails: over SMTP (aiosmtplib), or, with no SMTP server
configured, as .eml files in a local outbox folder for a developer to read.

`MailSender` runs in every worker process beside the API. It takes due messages from the outbox
table one at a time (a claim no other worker can take), makes each message's token, sends it and
records the outcome. A send that fails for a while (a 4xx, a dropped connection) is tried again
later, with backoff, until the message's end of life (`outbox.MAIL_MAX_AGE_MINUTES`); one the server
refuses for good (a 5xx about the message) is recorded `failed`; and while the server refuses our
settings (a wrong password, a refused STARTTLS), every message waits and the sender backs off.
"""

import asyncio
import contextlib
import logging
import os
import random
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

import aiosmtplib
from databases import Database
from starlette.datastructures import Secret

from app.core import config, metrics
from app.db.errors import DATABASE_UNAVAILABLE_ERRORS
from app.db.repositories.outbox import (
    OFFER_KINDS,
    TOKEN_KINDS,
    MailKind,
    OutboxMessage,
    OutboxRepository,
    PreparedMail,
)
from app.services import offer_mail

logger = logging.getLogger(__name__)

MAIL_SENDER_TASK = "phresh-mail-sender"

SUBJECTS = {
    MailKind.email_verification: "Confirm your email address for Phresh",
    MailKind.password_reset: "Reset your Phresh password",
    MailKind.password_changed: "Your Phresh password was changed",
    MailKind.email_changed: "The email address of your Phresh account was changed",
    MailKind.mfa_enabled: "Two-factor sign-in is on for your Phresh account",
    MailKind.mfa_disabled: "Two-factor sign-in is off for your Phresh account",
    MailKind.mfa_reset: "Two-factor sign-in of your Phresh account was reset",
    MailKind.account_deleted: "Your Phresh account was deleted",
    MailKind.offer_received: "New offers for your Phresh cleaning",
    MailKind.offer_accepted: "Your Phresh offer was accepted",
    MailKind.offer_rejected: "Your Phresh offer was not accepted",
    MailKind.offer_cancelled: "A cleaner backed out of your Phresh cleaning",
}
LINK_PATHS = {MailKind.email_verification: "/verify-email", MailKind.password_reset: "/reset-password"}


def link_for(kind: MailKind, token: str) -> str:
    return f"{config.PUBLIC_APP_URL}{LINK_PATHS[kind]}?{urlencode({'token': token})}"


def _when(message: OutboxMessage) -> str:
    return f"on {message.created_at.astimezone(UTC):%Y-%m-%d at %H:%M} UTC"


def _when_and_where(message: OutboxMessage) -> str:
    # The client address as the app sees it (a trusted proxy's word for it, docs/proxy.md).
    where = f", from the address {message.client_address}" if message.client_address else ""
    return _when(message) + where


def notice_text(message: OutboxMessage) -> str:
    """What an account notice says: what happened to the account, when and from where, and where
    to get help. Never a link that acts on the account, nor a token."""
    details = message.details or {}
    username = details.get("username", "")
    happened = _when_and_where(message)
    not_you = (
        "If this was not you, someone else may have had access to your account: ask for a password reset"
        f" in the Phresh app ({config.PUBLIC_APP_URL}) at once, and get help at {config.SUPPORT_CONTACT}."
    )
    kind = message.kind
    if kind is MailKind.password_changed:
        by_reset = details.get("how") == "reset"
        how, ended = (" with a reset link", "Every session") if by_reset else ("", "Every other session")
        body = (
            f"The password of your Phresh account {username} was changed{how} {happened}. {ended}"
            f" of the account has ended.\n\nIf you did this, there is nothing more to do. {not_you}"
        )
    elif kind is MailKind.email_changed:
        body = (
            f"The email address of your Phresh account {username} was changed from {message.recipient} to"
            f" {details.get('new_email', 'a new address')} {happened}. Mail about the account now goes to the new"
            f" address.\n\nIf you did this, there is nothing more to do."
            f" If not, get help at {config.SUPPORT_CONTACT} at once: say which address the account had."
        )
    elif kind is MailKind.mfa_enabled:
        body = (
            f"Two-factor sign-in was turned on for your Phresh account {username} {happened}. From now on,"
            f" logging in asks for a code from the authenticator app, or one of the recovery codes shown when"
            f" it was turned on.\n\nIf you did this, keep the recovery codes somewhere safe. {not_you}"
        )
    elif kind is MailKind.mfa_disabled:
        body = (
            f"Two-factor sign-in was turned off for your Phresh account {username} {happened}. Logging in now"
            f" takes the password alone, and every other session of the account has ended.\n\nIf you did this,"
            f" there is nothing more to do. {not_you}"
        )
    elif kind is MailKind.mfa_reset:
        body = (
            f"A Phresh administrator turned off two-factor sign-in for your account {username} {_when(message)}."
            f" Logging in now takes the password alone; you can turn two-factor sign-in on again in the app."
            f"\n\nIf you did not ask for this, get help at {config.SUPPORT_CONTACT} at once."
        )
    else:  # account_deleted
        body = (
            f"Your Phresh account {username} was deleted {happened}. Its sessions have ended and its profile"
            f" is gone; this address and the username can be used for a new account.\n\nIf you did not do"
            f" this, get help at {config.SUPPORT_CONTACT} at once."
        )
    greeting = f"Hello {username},\n\n" if username else "Hello,\n\n"
    return greeting + body + "\n"


def compose(mail: PreparedMail) -> EmailMessage:
    """The message for a prepared outbox row. Its Message-ID names the outbox row, so a message
    sent twice (a worker that died between the server's acceptance and recording it) is one
    message to mail software that de-duplicates."""
    message = mail.message
    if message.kind in OFFER_KINDS:
        # Sent to the account's address now; the only mail that may be turned off, in one click.
        assert mail.user is not None
        token = offer_mail.offer_mail_token(mail)
        email = _envelope(message, recipient=mail.user.email, text=offer_mail.offer_mail_text(mail, token=token))
        for header, value in offer_mail.unsubscribe_headers(token).items():
            email[header] = value
        return email
    if message.kind not in TOKEN_KINDS:
        return _envelope(message, recipient=message.recipient, text=notice_text(message))
    assert mail.user is not None and mail.token is not None  # prepared with both (OutboxRepository.prepare)
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
    recipient = message.recipient if message.kind is MailKind.email_verification else mail.user.email
    return _envelope(message, recipient=recipient, text=text)


def _envelope(message: OutboxMessage, *, recipient: str, text: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = config.MAIL_FROM
    email["To"] = recipient
    email["Subject"] = SUBJECTS[message.kind]
    email["Date"] = format_datetime(datetime.now(UTC))
    email["Message-ID"] = f"<outbox-{message.id}.{int(message.created_at.timestamp())}@phresh.io>"
    email["X-Phresh-Kind"] = message.kind.value
    # Plain 7-bit when it can be (usernames are ASCII; an address may not be): readable as it is stored.
    email.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    return email


class MailError(Exception):
    """A message was not sent. Subclasses say what to do about it."""


class TemporaryMailError(MailError):
    """Try this message again later: a 4xx reply at any step (RFC 5321 4.2.1; greylisting answers
    450 or 451 to a first MAIL FROM or RCPT TO), a dropped connection, a timeout."""


class PermanentMailError(MailError):
    """The mail server refused this message for good (a 5xx about it): sending it again would not help."""


class MailConfigurationError(MailError):
    """The mail server refuses our settings, not a message: a wrong password, a STARTTLS that is
    required but refused, a server that will not talk to us. Every message would meet the same
    answer, so none is failed for it: they wait until the settings are fixed."""


# Replies that say we may not send at all without (other) credentials, at whatever step they come:
# 530 authentication required, 534 mechanism too weak, 535 credentials invalid, 538 encryption
# required for the mechanism (RFC 4954).
AUTHENTICATION_CODES = frozenset({530, 534, 535, 538})

# A 5xx at these steps names no message: the server refuses us (our address, account, TLS
# settings or envelope sender, which is MAIL_FROM for every message). Failing one message for
# it would fail them all, one by one.
CONFIGURATION_STEPS = {
    "greeting": "SMTP_HOST and SMTP_PORT",
    "EHLO": "SMTP_HOST and SMTP_PORT",
    "STARTTLS": "SMTP_STARTTLS and SMTP_TLS",
    "AUTH": "SMTP_USERNAME and SMTP_PASSWORD",
    "MAIL FROM": "MAIL_FROM, SMTP_USERNAME and SMTP_PASSWORD",
}

MESSAGE_TOO_LARGE = 552

# TLS failures that are a connection ending, not a handshake that can never succeed.
TRANSIENT_TLS_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def classify(exc: Exception, step: str) -> MailError:
    """What a failure at one step of an SMTP conversation means for the message and for us."""
    code: int | None = None
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # One recipient per message; were there more, one 4xx among them is worth another try.
        code = min(refused.code for refused in exc.recipients) if exc.recipients else None
        reply = "; ".join(f"{refused.code} {refused.message}" for refused in exc.recipients)
    elif isinstance(exc, aiosmtplib.SMTPResponseException):
        code, reply = exc.code, f"{exc.code} {exc.message}"
    else:
        reply = f"{type(exc).__name__}: {exc}"
    text = f"{step}: {reply}"
    if code is not None and 500 <= code < 600:
        if code in AUTHENTICATION_CODES:
            return MailConfigurationError(f"{text} (check SMTP_USERNAME and SMTP_PASSWORD)")
        # 552 to MAIL FROM is about this message (its SIZE, RFC 1870), not our settings: held as
        # a settings error, one message too large would keep every other one queued.
        if step in CONFIGURATION_STEPS and not (step == "MAIL FROM" and code == MESSAGE_TOO_LARGE):
            return MailConfigurationError(f"{text} (check {CONFIGURATION_STEPS[step]})")
        return PermanentMailError(text)
    if code is not None:  # a 4xx (or a reply no RFC defines): the server asks us to come back
        return TemporaryMailError(text)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):  # an address in UTF-8 and a server without SMTPUTF8
        return PermanentMailError(text)
    tls_error = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    if isinstance(tls_error, ssl.SSLError) and not isinstance(tls_error, TRANSIENT_TLS_ERRORS):
        return MailConfigurationError(f"{text} (check SMTP_TLS, SMTP_STARTTLS and the server's certificate)")
    if (
        step == "AUTH"
        and isinstance(exc, aiosmtplib.SMTPException)
        and not isinstance(exc, (ConnectionError, TimeoutError))
    ):
        # No AUTH offered, or no mechanism in common: only other settings can change that.
        return MailConfigurationError(f"{text} (check SMTP_USERNAME, SMTP_PASSWORD and SMTP_STARTTLS)")
    return TemporaryMailError(text)  # a dropped connection, a timeout, a refused connection


class Transport(Protocol):
    async def send(self, email: EmailMessage) -> None: ...


class SmtpTransport:
    """Sends over SMTP, one connection per message, step by step so that a failure is known by the
    step it came at (see `classify`). The settings are the configured ones unless given."""

    def __init__(
        self,
        *,
        hostname: str = config.SMTP_HOST,
        port: int = config.SMTP_PORT,
        username: str = config.SMTP_USERNAME,
        password: Secret | None = None,  # SMTP_PASSWORD
        start_tls: str = config.SMTP_STARTTLS,
        use_tls: bool = config.SMTP_TLS,
        timeout: float = config.SMTP_TIMEOUT_SECONDS,
    ) -> None:
        self.hostname, self.port, self.username = hostname, port, username
        self.password = password if password is not None else Secret(str(config.SMTP_PASSWORD))
        self.start_tls, self.use_tls, self.timeout = start_tls, use_tls, timeout

    async def send(self, email: EmailMessage) -> None:
        client = aiosmtplib.SMTP(
            hostname=self.hostname, port=self.port, use_tls=self.use_tls, start_tls=False, timeout=self.timeout
        )
        step = "greeting"
        try:
            await client.connect()
            step = "EHLO"
            await self._ehlo(client)
            if not self.use_tls and (
                self.start_tls == "true" or (self.start_tls == "auto" and client.supports_extension("starttls"))
            ):
                step = "STARTTLS"
                if not client.supports_extension("starttls"):
                    raise MailConfigurationError(
                        "STARTTLS: SMTP_STARTTLS=true, and the server does not offer STARTTLS"
                        " (check SMTP_STARTTLS, SMTP_TLS and SMTP_PORT)"
                    )
                await client.starttls()
                step = "EHLO"
                await self._ehlo(client)
            if self.username:
                step = "AUTH"
                await client.login(self.username, str(self.password))
            step = "sending"  # MAIL FROM, RCPT TO and DATA: named by their errors (`_step_of`)
            await client.send_message(email)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise classify(exc, self._step_of(exc, step)) from exc
        except asyncio.CancelledError:
            # The worker is stopping: no polite QUIT, which could hold its shutdown for a timeout.
            client.close()
            raise
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):  # the message is sent or not by now
                if client.is_connected:
                    await client.quit()
            client.close()

    @staticmethod
    async def _ehlo(client: aiosmtplib.SMTP) -> None:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code < 500 or not client.is_connected:
                raise
            await client.helo()  # a server from before ESMTP (502 to EHLO)

    @staticmethod
    def _step_of(exc: Exception, step: str) -> str:
        if isinstance(exc, aiosmtplib.SMTPSenderRefused):
            return "MAIL FROM"
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            return "RCPT TO"
        if isinstance(exc, aiosmtplib.SMTPDataError):
            return "DATA"
        return step


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
        self._stopping = asyncio.Event()
        self._sending: OutboxMessage | None = None  # handed to the transport, its outcome not yet known
        self._task: asyncio.Task[None] | None = None
        self.on_sent: Callable[[OutboxMessage], None] | None = None  # for tests and operators

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name=MAIL_SENDER_TASK)

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop sending, without leaving a message to wait out its claim (MAIL_CLAIM_SECONDS).

        No new message is claimed. One claimed but not yet handed to the mail server goes back to
        the queue at once, for any worker to send. One being sent gets `grace` seconds
        (MAIL_STOP_SECONDS) to finish, so that it is not sent twice; past that, its connection is
        closed and it goes back to the queue too, its try not counted.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()  # an idle sender stops now, not at its next poll
        grace = config.MAIL_STOP_SECONDS if grace is None else grace
        if self._sending is not None:
            # A warning, as the stop waits on something outside: a mail server that is slow to answer.
            logger.warning("mail sender: stopping; message %s gets up to %g s to be sent", self._sending.id, grace)
        _, pending = await asyncio.wait({task}, timeout=grace)
        if pending:
            if self._sending is not None:
                logger.warning(
                    "mail sender: message %s not sent within %g s of the stop: back in the queue for another worker",
                    self._sending.id,
                    grace,
                )
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No message is handled by this sender inside the block (one in hand is finished first)."""
        async with self._busy:
            yield

    def wake(self) -> None:
        """A message was just enqueued here: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        refused_rounds = 0  # rounds in a row in which the mail server refused our settings
        while not self._stopping.is_set():
            try:
                async with self._busy:
                    if self._stopping.is_set():
                        break
                    busy = await self.send_next()
                refused_rounds = 0
            except asyncio.CancelledError:
                raise
            except MailConfigurationError as exc:
                # One line per round, not per message: the message in hand is back in the queue,
                # and so is everything else, until the settings are fixed (a restart reads them).
                refused_rounds += 1
                delay = retry_delay(refused_rounds)
                waiting = await self._waiting_count()
                logger.error(
                    "mail sender: the mail server refuses our settings: %s. %s waiting, none lost: they are sent"
                    " once the settings are fixed and the server restarted; trying again in %.1f s",
                    exc,
                    "1 message is" if waiting == 1 else f"{'Some' if waiting is None else waiting} messages are",
                    delay,
                )
                # The whole sender backs off (a wake would only meet the same refusal); a stop ends it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                continue
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

    async def _waiting_count(self) -> int | None:
        with contextlib.suppress(*DATABASE_UNAVAILABLE_ERRORS):
            return await self.outbox.count_waiting()
        return None

    async def send_next(self) -> bool:
        """Claim, prepare and send one due message; whether there was one. Raises
        MailConfigurationError, with the message back in the queue, when the server refuses our settings."""
        message = await self.outbox.claim_next()
        if message is None:
            return False
        if message.expired:
            logger.warning(
                "mail %s to %s expired unsent after %d attempts (last error: %s)",
                message.id,
                message.recipient,
                message.attempts,
                message.last_error,
            )
            metrics.count_outbox("expired")  # recorded by the claim itself
            return True
        try:
            return await self._send(message)
        except asyncio.CancelledError:
            # Stopped past its grace (mid-send, the transport has closed its connection) or while
            # preparing: back in the queue at once rather than when the claim runs out (which is
            # what happens if the database cannot take it back now, as after a crash).
            with contextlib.suppress(*DATABASE_UNAVAILABLE_ERRORS):
                await self.outbox.release(message.id)
            raise
        finally:
            self._sending = None

    async def _send(self, message: OutboxMessage) -> bool:
        prepared = await self.outbox.prepare(message)
        if prepared is None:
            await self.outbox.finish(message.id, outcome="skipped")
            metrics.count_outbox("skipped")
            return True
        if self._stopping.is_set():
            # Not handed to the mail server yet: another worker sends it (with a new token).
            await self.outbox.release(message.id)
            return True
        self._sending = message
        try:
            await self.transport.send(compose(prepared))
        except PermanentMailError as exc:
            logger.error("mail %s to %s refused for good: %s", message.id, message.recipient, exc)
            await self.outbox.finish(message.id, outcome="failed", error=str(exc)[:500])
            metrics.count_outbox("failed")
            return True
        except MailConfigurationError as exc:
            await self.outbox.release(message.id, error=str(exc))
            raise
        except (MailError, aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            delay = retry_delay(message.attempts)
            logger.warning("mail %s not sent (%s); trying again in %.1f s", message.id, exc, delay)
            error = str(exc) if isinstance(exc, MailError) else f"{type(exc).__name__}: {exc}"
            await self.outbox.retry_later(message.id, delay=delay, error=error)
            metrics.count_outbox("retried")
            return True
        await self.outbox.finish(message.id, outcome="sent")
        metrics.count_outbox("sent")
        if self.on_sent is not None:
            self.on_sent(message)
        return True
