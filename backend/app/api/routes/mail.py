"""Email verification and password reset: the routes that ask for a mail, and those that take the
token a mail carries. Mails are enqueued in the same transaction as what causes them and sent by
the background sender (app/services/mail.py)."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.client import ClientAddress, hashing_place
from app.api.dependencies.database import get_repository
from app.api.dependencies.throttling import (
    RateLimits,
    count_mail_token_use,
    count_reset_request,
    count_verification_mail,
)
from app.api.errors import error_responses
from app.db.repositories.outbox import MailKind, OutboxRepository
from app.db.repositories.security_events import SecurityEventsRepository
from app.models.mail import EmailVerification, EmailVerified, Notice, PasswordReset, PasswordResetRequest
from app.models.security_event import SecurityEventKind as Event
from app.services import auth_service, hashing_pool
from app.services.notices import NoticeKind, queue_notice

router = APIRouter()

Outbox = Annotated[OutboxRepository, Depends(get_repository(OutboxRepository))]
Events = Annotated[SecurityEventsRepository, Depends(get_repository(SecurityEventsRepository))]

ALREADY_VERIFIED = "Your email address is verified already."
INVALID_LINK = "This link is invalid or has expired. Ask for a new one."
RESET_REQUESTED = "If an account has that email address, a link to reset its password is on its way to it."
PASSWORD_RESET_DONE = "Your password has been changed, and every session has ended. Log in with the new password."


def verification_sent(email: str) -> str:
    return f"A link to confirm {email} is on its way to it."


def wake_mail_sender(request: Request) -> None:
    """The message is committed: have this worker's sender look now rather than at its next poll."""
    request.app.state.mail_sender.wake()


@router.post(
    "/me/verification/",
    response_model=Notice,
    name="users:send-verification-email",
    summary="Send my verification email",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(400, 401, 429, 503, e400=ALREADY_VERIFIED),
)
async def send_verification_email(
    request: Request,
    current_user: CurrentUser,
    outbox: Outbox,
    limits: RateLimits,
    events: Events,
    client_address: ClientAddress,
) -> Notice:
    """Send (again) the message with a link that confirms my current email address. Limited per user."""
    if current_user.email_verified:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=ALREADY_VERIFIED)
    await count_verification_mail(limits, user_id=current_user.id)
    await outbox.enqueue(
        kind=MailKind.email_verification,
        recipient=current_user.email,
        user_id=current_user.id,
        client_address=client_address,
    )
    await events.record(kind=Event.email_verification_requested, user_id=current_user.id, client_address=client_address)
    wake_mail_sender(request)
    return Notice(detail=verification_sent(current_user.email))


@router.post(
    "/verify-email/",
    response_model=EmailVerified,
    name="users:verify-email",
    summary="Confirm my email address",
    responses=error_responses(400, 413, 429, 503, e400=INVALID_LINK),
)
async def verify_email(
    verification: EmailVerification,
    outbox: Outbox,
    limits: RateLimits,
    events: Events,
    client_address: ClientAddress,
) -> EmailVerified:
    """Take the token of a verification link: the email it was sent to is verified, if it is still
    the account's. Each token works once, until it expires or the email changes."""
    hit = await count_mail_token_use(limits, address=client_address)
    verified = await outbox.verify_email(token=verification.token)
    if verified is None:
        await events.record(kind=Event.mail_token_rejected, client_address=client_address, detail="email verification")
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=INVALID_LINK)
    await limits.forget_hit(hit=hit)
    user_id, email = verified
    await events.record(kind=Event.email_verified, user_id=user_id, client_address=client_address)
    return EmailVerified(email=email, email_verified=True)


@router.post(
    "/password-reset/",
    response_model=Notice,
    name="users:request-password-reset",
    summary="Ask for a password reset",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(400, 413, 429, 503),
)
async def request_password_reset(
    request: Request,
    reset_request: PasswordResetRequest,
    outbox: Outbox,
    limits: RateLimits,
    events: Events,
    client_address: ClientAddress,
) -> Notice:
    """Ask for a mail with a link to reset the password of the account with this email. The answer
    is the same whether or not there is one, and costs the same: whose account it is, if anyone's,
    is found out later, by the sender. Limited per email and per client address."""
    await count_reset_request(limits, email=reset_request.email, address=client_address)
    await outbox.enqueue(
        kind=MailKind.password_reset, recipient=reset_request.email, user_id=None, client_address=client_address
    )
    await events.record(
        kind=Event.password_reset_requested, client_address=client_address, detail=f"for {reset_request.email}"
    )
    wake_mail_sender(request)
    return Notice(detail=RESET_REQUESTED)


@router.post(
    "/password-reset/confirm/",
    response_model=Notice,
    name="users:reset-password",
    summary="Reset my password",
    responses=error_responses(400, 413, 429, 503, e400=INVALID_LINK),
)
async def reset_password(
    request: Request,
    reset: PasswordReset,
    outbox: Outbox,
    limits: RateLimits,
    events: Events,
    client_address: ClientAddress,
) -> Notice:
    """Take the token of a reset link and a new password (the rules of registration). The token
    works once, for an hour, and only while the password is the one it was sent for; using it
    ends every session and refuses every access token issued before."""
    async with hashing_place(request):
        hit = await count_mail_token_use(limits, address=client_address)
        if not await outbox.reset_token_is_valid(token=reset.token):
            await events.record(kind=Event.mail_token_rejected, client_address=client_address, detail="password reset")
            raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=INVALID_LINK)
        await limits.forget_hit(hit=hit)
        password_update = await hashing_pool.run(
            auth_service.create_salt_and_hashed_password, plaintext_password=reset.new_password
        )
    async with outbox.db.transaction():  # the new password and its notice, or neither
        user_id = await outbox.reset_password(
            token=reset.token, password=password_update.password, salt=password_update.salt
        )
        account = await outbox.account(user_id=user_id) if user_id is not None else None
        if account is not None:
            await queue_notice(
                outbox.db, account, NoticeKind.password_changed, client_address=client_address, how="reset"
            )
    if user_id is None:  # used, or the password changed, while the new one was being hashed
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=INVALID_LINK)
    await events.record(kind=Event.password_reset, user_id=user_id, client_address=client_address)
    wake_mail_sender(request)
    return Notice(detail=PASSWORD_RESET_DONE)
