"""Mail about offers: what each says, and its one-click unsubscribe (RFC 8058).

Each offer mail carries an unsubscribe token for its recipient and its kind: in the
`List-Unsubscribe` header, as the API's URL that mail providers POST to
(`List-Unsubscribe-Post: List-Unsubscribe=One-Click`), and in its text, as a link to the client
app's page (PUBLIC_APP_URL/unsubscribe?token=..., as the verification and reset links are), which
shows what the link does (GET) and turns the mail off on a button press (POST). A GET never
unsubscribes: mail scanners open the links of every mail they see.

The token is `<user id>.<kind>.<signature>`: an HMAC-SHA256 of the user id and the kind, under a
key of its own derived from SECRET_KEY, so it works without logging in, for that user and kind
only, and is worth nothing anywhere else (nor is any other token worth anything here). It does not
expire: a mail may be unsubscribed from months after it came (mail providers act on old mail too),
and all a token can ever do is turn one kind of mail off for one user, who can turn it back on.
It stays valid across a key rotation while the old key is listed in SECRET_KEY_PREVIOUS.
"""

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime
from urllib.parse import urlencode

from app.core import config
from app.db.repositories.outbox import MailKind, OfferMailContent, OfferMailUser, PreparedMail
from app.models.notification import KIND_DESCRIPTIONS, NotificationKind
from app.models.user import deleted_username

# The path of the one-click unsubscribe (app/api/routes/notifications.py serves it; a test checks
# that the two agree).
UNSUBSCRIBE_PATH = f"{config.API_PREFIX}/users/unsubscribe/"
# The client app's page the link in a mail's text opens.
UNSUBSCRIBE_PAGE = "/unsubscribe"

# What the key is for: no other token in Phresh is signed with a key derived this way.
_TOKEN_PURPOSE = b"phresh:unsubscribe:v1"
_TOKEN = re.compile(r"([1-9][0-9]{0,9})\.([a-z_]{1,32})\.([A-Za-z0-9_-]{43})")


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _TOKEN_PURPOSE, hashlib.sha256).digest()


# The signing key and those of SECRET_KEY_PREVIOUS (verified against, never signed with).
_KEYS = tuple(_key(str(secret)) for secret in (config.SECRET_KEY, *config.SECRET_KEY_PREVIOUS))


def _signature(key: bytes, user_id: int, kind: NotificationKind) -> str:
    digest = hmac.new(key, f"{user_id}.{kind.value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def unsubscribe_token(*, user_id: int, kind: NotificationKind) -> str:
    return f"{user_id}.{kind.value}.{_signature(_KEYS[0], user_id, kind)}"


def read_unsubscribe_token(token: str) -> tuple[int, NotificationKind] | None:
    """The user and the kind a token unsubscribes from, or None for anything this service did not sign."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    user_id, kind_name, signature = int(match[1]), match[2], match[3]
    if kind_name not in NotificationKind.__members__:
        return None
    kind = NotificationKind(kind_name)
    if not any(hmac.compare_digest(signature, _signature(key, user_id, kind)) for key in _KEYS):
        return None
    return user_id, kind


def one_click_url(token: str) -> str:
    """Where mail providers POST the unsubscribe (the List-Unsubscribe header)."""
    return f"{config.PUBLIC_API_URL}{UNSUBSCRIBE_PATH}?{urlencode({'token': token})}"


def unsubscribe_page_url(token: str) -> str:
    """The link in the mail's text: the client app's page, which asks before it unsubscribes."""
    return f"{config.PUBLIC_APP_URL}{UNSUBSCRIBE_PAGE}?{urlencode({'token': token})}"


def unsubscribe_headers(token: str) -> dict[str, str]:
    return {
        "List-Unsubscribe": f"<{one_click_url(token)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def _at(moment: datetime) -> str:
    return f"on {moment.astimezone(UTC):%Y-%m-%d at %H:%M} UTC"


def _cleaning(content: OfferMailContent) -> str:
    return f'"{content.cleaning_name}" (cleaning {content.cleaning_id})'


def _cleaning_link(content: OfferMailContent) -> str:
    # The tutorial's client shows a cleaning job at /cleaning-jobs/<id>.
    return f"{config.PUBLIC_APP_URL}/cleaning-jobs/{content.cleaning_id}"


OFFER_STATES = {
    None: " (since withdrawn)",
    "pending": "",
    "rejected": " (not accepted: you accepted another)",
    "accepted": " (accepted)",
    "completed": " (accepted, and done)",
    "cancelled": " (accepted, then cancelled)",
}


def _offer_line(named: OfferMailUser) -> str:
    when = f", {_at(named.offered_at)}" if named.offered_at is not None else ""
    return f"- {named.username}{when}{OFFER_STATES.get(named.status, '')}"


def _named(content: OfferMailContent) -> str:
    return content.users[0].username if content.users else "someone"


def _left_phresh(content: OfferMailContent) -> bool:
    """Whether the user the mail names has deleted their account since (a tombstone's name)."""
    return bool(content.users) and content.users[0].username == deleted_username(content.users[0].user_id)


def offer_mail_text(mail: PreparedMail, *, token: str) -> str:
    """The text of an offer mail: what happened, a link to the cleaning, and how to stop such mail."""
    assert mail.user is not None and mail.offer is not None  # prepared with both (OutboxRepository.prepare)
    message, content = mail.message, mail.offer
    kind = message.kind
    when = _at(message.created_at)
    if kind is MailKind.offer_received:
        count = len(content.users)
        came = "A new offer" if count == 1 else f"{count} new offers"
        body = (
            f"{came} came in for your cleaning {_cleaning(content)}:\n\n"
            + "\n".join(_offer_line(named) for named in content.users)
            + f"\n\nSee them, and accept one, in the Phresh app: {_cleaning_link(content)}\n\n"
            f"You get at most one such mail per cleaning every {config.OFFER_DIGEST_MINUTES} minutes,"
            " each listing the offers since the one before."
        )
    elif kind is MailKind.offer_accepted:
        body = (
            f"{_named(content)} accepted your offer for the cleaning {_cleaning(content)} {when}: the job is"
            f" yours.\n\nSee it in the Phresh app: {_cleaning_link(content)}\n\nIf you can no longer do it,"
            " cancel your offer in the app, so that the owner can accept another."
        )
    elif kind is MailKind.offer_rejected and _left_phresh(content):
        body = (
            f"The owner of the cleaning {_cleaning(content)} has left Phresh, so your offer on it can no"
            " longer be accepted."
        )
    elif kind is MailKind.offer_rejected:
        body = (
            f"{_named(content)} accepted another offer for the cleaning {_cleaning(content)} {when}, so yours"
            " was not accepted. Should that cleaner back out, your offer is pending again."
        )
    elif _left_phresh(content):  # offer_cancelled: the cleaner deleted their account
        body = (
            f"The cleaner you accepted for your cleaning {_cleaning(content)} has left Phresh: the offer"
            " you accepted is cancelled, and the offers you had not accepted are pending again.\n\n"
            f"Accept another in the Phresh app: {_cleaning_link(content)}"
        )
    else:  # offer_cancelled
        body = (
            f"{_named(content)} backed out of your cleaning {_cleaning(content)} {when}: the offer you"
            " accepted is cancelled, and the offers you had not accepted are pending again.\n\n"
            f"Accept another in the Phresh app: {_cleaning_link(content)}"
        )
    description = KIND_DESCRIPTIONS[NotificationKind(kind.value)]
    footer = (
        f"You get this mail because mail about {description} is on for your Phresh account"
        f" {mail.user.username}. To stop it, open\n{unsubscribe_page_url(token)}\n"
        "or choose which mails you get in the app's settings."
    )
    return f"Hello {mail.user.username},\n\n{body}\n\n-- \n{footer}\n"


def offer_mail_token(mail: PreparedMail) -> str:
    """The unsubscribe token of a prepared offer mail: its recipient and its kind."""
    assert mail.user is not None
    return unsubscribe_token(user_id=mail.user.id, kind=NotificationKind(mail.message.kind.value))
