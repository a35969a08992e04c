"""Leaving Phresh, and taking your data: the deletion of my account, and the export of everything
Phresh holds about me (app/db/repositories/account.py says what a deletion does with what the
account touched)."""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response, status

from app.api.dependencies.auth import NOT_ACTIVE, CurrentUser, unauthorized
from app.api.dependencies.client import ClientAddress, hashing_place
from app.api.dependencies.database import get_repository
from app.api.dependencies.throttling import RateLimits, Throttled, count_password_check, uncounted_if_untried
from app.api.errors import error_responses
from app.api.routes.mail import wake_mail_sender
from app.core import metrics
from app.db.repositories.account import AccountGoneError, AccountRepository
from app.db.repositories.security_events import SecurityEventsRepository
from app.models.account import AccountDeleted, AccountDeletion
from app.models.export import AccountExport
from app.models.security_event import SecurityEventKind as Event
from app.models.session import SessionEndReason
from app.services import auth_service, hashing_pool
from app.services.mfa import SecondFactorThrottled, check_second_factor, second_factor_on
from app.services.notices import NoticeKind, queue_notice

router = APIRouter()

AccountRepo = Annotated[AccountRepository, Depends(get_repository(AccountRepository))]
Events = Annotated[SecurityEventsRepository, Depends(get_repository(SecurityEventsRepository))]

WRONG_PASSWORD = "The password is incorrect."
CODE_REQUIRED = "Your second factor is on: send a code from your authenticator app, or a recovery code."
WRONG_CODE = "The code is incorrect."


def bad_request(detail: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=detail)


@router.delete(
    "/me/",
    response_model=AccountDeleted,
    name="users:delete-current-user",
    summary="Delete my account",
    responses=error_responses(400, 401, 413, 429, 503, e400=WRONG_PASSWORD),
)
async def delete_current_user(
    request: Request,
    account_deletion: Annotated[AccountDeletion, Body(embed=True)],
    current_user: CurrentUser,
    account: AccountRepo,
    limits: RateLimits,
    client_address: ClientAddress,
) -> AccountDeleted:
    """Delete my account, with my password (and a `code` when my second factor is on). It cannot
    be undone. Every session of mine ends at once; my profile goes; my cleanings go with their
    offers, except one whose offer was accepted or completed: it stays for its cleaner, with its
    owner shown as a deleted user (`deleted-user.<id>`, as every answer that embeds me shows me
    from then on); my pending offers are withdrawn and an accepted one cancelled; the evaluations I
    wrote stay, those I received go. My email and username are free to register again. A notice
    goes to my address. Wrong passwords and codes count as failed logins do."""
    async with hashing_place(request):
        hit = await count_password_check(limits, user_id=current_user.id)
        async with uncounted_if_untried(limits, hit):
            verified = await hashing_pool.run(
                auth_service.verify_password,
                password=account_deletion.password,
                salt=current_user.salt,
                hashed_pw=current_user.password,
            )
        if not verified:
            raise bad_request(WRONG_PASSWORD)
        await limits.forget_hit(hit=hit)
    db = account.db
    if await second_factor_on(db, current_user.id):
        if account_deletion.code is None:
            raise bad_request(CODE_REQUIRED)
        try:
            # Outside the deletion's transaction: a wrong code must stay counted.
            code_accepted = await check_second_factor(db, current_user.id, account_deletion.code)
        except SecondFactorThrottled as exc:
            raise Throttled(exc.retry_after) from exc
        if not code_accepted:
            raise bad_request(WRONG_CODE)
    try:
        async with db.transaction():  # the deletion and its notice, or neither
            deleted, former = await account.delete_account(user_id=current_user.id)
            await queue_notice(db, former, NoticeKind.account_deleted, client_address=client_address)
    except AccountGoneError as exc:  # deleted by a request that came first
        raise unauthorized(NOT_ACTIVE) from exc
    metrics.count_sessions_ended(SessionEndReason.account_deleted.value, deleted.sessions_ended)
    wake_mail_sender(request)
    return deleted


@router.get(
    "/me/export/",
    response_model=AccountExport,
    name="users:export-current-user",
    summary="Export my data",
    responses=error_responses(401, 503),
)
async def export_current_user(
    current_user: CurrentUser, account: AccountRepo, events: Events, client_address: ClientAddress
) -> Response:
    """Everything Phresh holds about me, as one JSON document (read in one snapshot): my account,
    profile, cleanings, the offers I made and those made on my cleanings, the evaluations I gave and
    received, my sessions, the audit trail's events about me, the mail sent to me, and whether my
    second factor is on. Never a password hash, salt, token or secret."""
    export = await account.export_account(user_id=current_user.id)
    if export is None:  # deleted since the request was authenticated
        raise unauthorized(NOT_ACTIVE)
    # Recorded after the snapshot it was read from: the export does not list itself.
    await events.record(kind=Event.account_exported, user_id=current_user.id, client_address=client_address)
    return Response(
        content=export.model_dump_json(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="phresh-account-{current_user.id}.json"'},
    )
