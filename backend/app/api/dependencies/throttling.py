"""Brute-force limits on login, registration and password changes, counted in PostgreSQL."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, HTTPException, status

from app.api.dependencies.database import get_repository
from app.core import config, metrics
from app.db.repositories.rate_limits import Hit, RateLimitsRepository
from app.services.hashing import ClientGoneError

LOGIN_ACCOUNT = "login:account"
LOGIN_ADDRESS = "login:address"
REGISTER_ADDRESS = "register:address"
PASSWORD_USER = "password:user"

TOO_MANY_ATTEMPTS = "Too many attempts. Try again later."

RateLimits = Annotated[RateLimitsRepository, Depends(get_repository(RateLimitsRepository))]


class Throttled(HTTPException):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=TOO_MANY_ATTEMPTS,
            headers={"Retry-After": str(retry_after)},
        )


async def count_attempt(
    limits: RateLimitsRepository, *, keys: dict[str, str], maxima: dict[str, int], window_seconds: int
) -> Hit:
    """Count one attempt in each bucket; past any bucket's maximum, take it back and refuse (429).

    A refused attempt is not counted, so a lock lifts one window after the last attempt that was
    actually tried, even while someone keeps knocking.
    """
    hit = await limits.record_hit(keys=keys, window_seconds=window_seconds)
    for bucket, maximum in maxima.items():
        count, retry_after = hit.counts[bucket]
        if count > maximum:
            await limits.forget_hit(hit=hit)
            metrics.RATE_LIMIT_REFUSALS.labels(bucket).inc()
            raise Throttled(retry_after)
    return hit


def login_account_key(login: str) -> str:
    """Failed logins are counted per name typed, whether or not an account has it."""
    # NUL cannot be stored in PostgreSQL text; no stored name contains one anyway.
    return login.strip().lower().replace("\x00", "\ufffd")[:320]


async def count_login_attempt(limits: RateLimitsRepository, *, login: str, address: str) -> Hit:
    return await count_attempt(
        limits,
        keys={LOGIN_ACCOUNT: login_account_key(login), LOGIN_ADDRESS: address},
        maxima={
            LOGIN_ACCOUNT: config.LOGIN_MAX_FAILURES_PER_ACCOUNT,
            LOGIN_ADDRESS: config.LOGIN_MAX_FAILURES_PER_ADDRESS,
        },
        window_seconds=config.LOGIN_FAILURE_WINDOW_SECONDS,
    )


async def count_registration(limits: RateLimitsRepository, *, address: str) -> Hit:
    return await count_attempt(
        limits,
        keys={REGISTER_ADDRESS: address},
        maxima={REGISTER_ADDRESS: config.REGISTER_MAX_PER_ADDRESS},
        window_seconds=config.REGISTER_WINDOW_SECONDS,
    )


async def count_password_check(limits: RateLimitsRepository, *, user_id: int) -> Hit:
    """Wrong current passwords on a password change count like failed logins, per user."""
    return await count_attempt(
        limits,
        keys={PASSWORD_USER: str(user_id)},
        maxima={PASSWORD_USER: config.LOGIN_MAX_FAILURES_PER_ACCOUNT},
        window_seconds=config.LOGIN_FAILURE_WINDOW_SECONDS,
    )


@asynccontextmanager
async def uncounted_if_untried(limits: RateLimitsRepository, hit: Hit) -> AsyncIterator[None]:
    """An attempt whose client went away before its password was checked was never tried: take it back."""
    try:
        yield
    except ClientGoneError:
        await limits.forget_hit(hit=hit)
        raise


REFRESH_ADDRESS = "refresh:address"


async def count_refresh(limits: RateLimitsRepository, *, address: str) -> Hit:
    """Refresh tokens that match no live session count per client address, like failed logins."""
    return await count_attempt(
        limits,
        keys={REFRESH_ADDRESS: address},
        maxima={REFRESH_ADDRESS: config.REFRESH_MAX_FAILURES_PER_ADDRESS},
        window_seconds=config.LOGIN_FAILURE_WINDOW_SECONDS,
    )


VERIFICATION_USER = "verification:user"
RESET_EMAIL = "reset:email"
RESET_ADDRESS = "reset:address"
MAIL_TOKEN_ADDRESS = "mail-token:address"


async def count_verification_mail(limits: RateLimitsRepository, *, user_id: int) -> Hit:
    return await count_attempt(
        limits,
        keys={VERIFICATION_USER: str(user_id)},
        maxima={VERIFICATION_USER: config.VERIFICATION_MAX_PER_USER},
        window_seconds=config.MAIL_LIMIT_WINDOW_SECONDS,
    )


async def count_reset_request(limits: RateLimitsRepository, *, email: str, address: str) -> Hit:
    """Reset mails asked for, per email typed (an account's or not) and per client address."""
    return await count_attempt(
        limits,
        keys={RESET_EMAIL: email.strip().lower()[:320], RESET_ADDRESS: address},
        maxima={RESET_EMAIL: config.PASSWORD_RESET_MAX_PER_EMAIL, RESET_ADDRESS: config.PASSWORD_RESET_MAX_PER_ADDRESS},
        window_seconds=config.MAIL_LIMIT_WINDOW_SECONDS,
    )


async def count_mail_token_use(limits: RateLimitsRepository, *, address: str) -> Hit:
    """Tokens from mails that turn out invalid count per address like failed logins."""
    return await count_attempt(
        limits,
        keys={MAIL_TOKEN_ADDRESS: address},
        maxima={MAIL_TOKEN_ADDRESS: config.LOGIN_MAX_FAILURES_PER_ADDRESS},
        window_seconds=config.LOGIN_FAILURE_WINDOW_SECONDS,
    )
