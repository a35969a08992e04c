"""Mail about offers: which kinds I get (GET/PUT /users/me/notifications/), and the one-click
unsubscribe that every such mail carries (GET/POST /users/unsubscribe/?token=..., no login:
app/services/offer_mail.py signs and reads the token). Account mail (verification, reset, the
account notices) is not optional and is not here."""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Query, status

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.database import get_repository
from app.api.errors import error_responses
from app.db.repositories.notifications import NotificationsRepository
from app.models.notification import (
    KIND_DESCRIPTIONS,
    NotificationKind,
    NotificationPreferences,
    NotificationPreferencesUpdate,
    UnsubscribeLink,
)
from app.services.offer_mail import read_unsubscribe_token

router = APIRouter()

Notifications = Annotated[NotificationsRepository, Depends(get_repository(NotificationsRepository))]

INVALID_UNSUBSCRIBE_LINK = "This unsubscribe link is not valid. Choose which mails you get in your settings."
# A token as minted is about 60 characters; anything much longer is refused before it is read.
UnsubscribeToken = Annotated[
    str, Query(min_length=1, max_length=128, description="The token of the mail's unsubscribe link.")
]


def invalid_link() -> HTTPException:
    return HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=INVALID_UNSUBSCRIBE_LINK)


def _described(kind: NotificationKind, *, subscribed: bool, done: bool) -> str:
    what = f"mail about {KIND_DESCRIPTIONS[kind]}"
    if done:
        return f"You will no longer get {what}. Turn it back on any time in your settings."
    if subscribed:
        return f"POST to this link to stop {what}."
    return f"You do not get {what}: there is nothing to stop."


@router.get(
    "/me/notifications/",
    response_model=NotificationPreferences,
    name="users:get-notification-preferences",
    summary="Which offer mails I get",
    responses=error_responses(401, 503),
)
async def get_notification_preferences(
    current_user: CurrentUser, notifications: Notifications
) -> NotificationPreferences:
    """Each kind of mail about offers, on (`true`, the default) or off."""
    return await notifications.get_preferences(user_id=current_user.id)


@router.put(
    "/me/notifications/",
    response_model=NotificationPreferences,
    name="users:update-notification-preferences",
    summary="Choose which offer mails I get",
    responses=error_responses(400, 401, 413, 503),
)
async def update_notification_preferences(
    notification_preferences: Annotated[NotificationPreferencesUpdate, Body(embed=True)],
    current_user: CurrentUser,
    notifications: Notifications,
) -> NotificationPreferences:
    """Turn kinds of mail about offers on (`true`) or off (`false`); a kind left out stays as it
    is. The answer is every kind as it is now. A mail already waiting to be sent (a digest of new
    offers) is not sent if its kind is off by then."""
    return await notifications.update_preferences(user_id=current_user.id, changes=notification_preferences.changes())


@router.get(
    "/unsubscribe/",
    response_model=UnsubscribeLink,
    name="users:preview-unsubscribe",
    summary="What an unsubscribe link does",
    responses=error_responses(400, 503, e400=INVALID_UNSUBSCRIBE_LINK),
)
async def preview_unsubscribe(token: UnsubscribeToken, notifications: Notifications) -> UnsubscribeLink:
    """Whose mail, and which kind, the link of a mail's footer would stop, and whether it is on now.
    Changes nothing (mail scanners open every link they find): the client app's unsubscribe page
    shows this and POSTs on a button press. No login: the token is the permission."""
    read = read_unsubscribe_token(token)
    if read is None:
        raise invalid_link()
    user_id, kind = read
    wanted = await notifications.wants(user_id=user_id, kind=kind)
    if wanted is None:
        raise invalid_link()
    username, subscribed = wanted
    return UnsubscribeLink(
        username=username, kind=kind, subscribed=subscribed, detail=_described(kind, subscribed=subscribed, done=False)
    )


@router.post(
    "/unsubscribe/",
    response_model=UnsubscribeLink,
    name="users:unsubscribe",
    summary="Unsubscribe in one click",
    responses=error_responses(400, 413, 503, e400=INVALID_UNSUBSCRIBE_LINK),
)
async def unsubscribe(token: UnsubscribeToken, notifications: Notifications) -> UnsubscribeLink:
    """Stop one kind of mail for one user: those the token names (RFC 8058 one-click unsubscribe:
    the `List-Unsubscribe` URL of every mail about offers, which mail providers POST to with the
    body `List-Unsubscribe=One-Click`; any body is accepted and none is needed). No login. Doing
    it again changes nothing; turn the kind back on with PUT /users/me/notifications/."""
    read = read_unsubscribe_token(token)
    if read is None:
        raise invalid_link()
    user_id, kind = read
    username = await notifications.unsubscribe(user_id=user_id, kind=kind)
    if username is None:
        raise invalid_link()
    return UnsubscribeLink(
        username=username, kind=kind, subscribed=False, detail=_described(kind, subscribed=False, done=True)
    )
