"""The second factor: time-based one-time passwords (TOTP, RFC 6238 over HOTP, RFC 4226) and
recovery codes.

The TOTP secret is stored sealed with AES-GCM under a key derived (HKDF-SHA256) from SECRET_KEY,
bound to its user (a sealed secret copied onto another row does not open). Recovery codes are
stored as HMAC-SHA256 under another derived key: a copy of the database alone cannot test guesses.
Keys from before a rotation (SECRET_KEY_PREVIOUS) still open and match what they sealed and hashed.
Nothing here logs a secret or a code.

Other modules use `second_factor_on` and `check_second_factor` (a code or a recovery code, each
taken once, wrong ones counted against the account's limit).
"""

import base64
import hashlib
import hmac
import io
import re
import secrets
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from urllib.parse import quote, urlencode

import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from databases import Database

from app.core import config, metrics
from app.db.repositories.mfa import MfaRepository
from app.db.repositories.rate_limits import Hit, RateLimitsRepository
from app.services.authentication import PREVIOUS_KEYS, new_random_token, random_token_hash

# RFC 6238's defaults, which every authenticator app reads: HMAC-SHA1, six digits, 30-second steps.
TOTP_PERIOD_SECONDS = 30
TOTP_DIGITS = 6
# A code is accepted in its own step and one step either side (clocks that drift, a slow typist).
TOTP_STEPS_EITHER_SIDE = 1
# 160 bits, the HMAC-SHA1 key length RFC 4226 recommends.
SECRET_BYTES = 20

# The login's second step: its token serves five minutes.
MFA_CHALLENGE_SECONDS = 5 * 60

RECOVERY_CODE_COUNT = 10
# Crockford's base32: no I, L, O or U, so a code read aloud or copied by hand is the code.
RECOVERY_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RECOVERY_CODE_LENGTH = 12  # 60 bits each
_CROCKFORD_SUBSTITUTES = str.maketrans({"O": "0", "I": "1", "L": "1"})

TOTP_CODE = re.compile(f"[0-9]{{{TOTP_DIGITS}}}")
RECOVERY_CODE = re.compile(f"[{RECOVERY_ALPHABET}]{{{RECOVERY_CODE_LENGTH}}}")

# Rate limit buckets (rate_limit_hits): wrong codes per account, and per login challenge.
MFA_ACCOUNT = "mfa:account"
MFA_TOKEN = "mfa:token"


class SecondFactorThrottled(Exception):
    """Too many wrong codes for this account (or this login) lately: answer 429 with Retry-After."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many wrong codes; retry after {retry_after} s")
        self.retry_after = retry_after


class CodeKind(StrEnum):
    totp = "code"
    recovery_code = "recovery code"


# --- RFC 4226 / 6238 ------------------------------------------------------------------------------


def hotp(secret: bytes, counter: int, *, digits: int = TOTP_DIGITS, digest: str = "sha1") -> str:
    """RFC 4226's HOTP value of `counter` (5.3: dynamic truncation, then the low `digits` digits)."""
    mac = hmac.new(secret, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def time_step(at: float, *, period: int = TOTP_PERIOD_SECONDS) -> int:
    """RFC 6238's T: whole periods since the Unix epoch."""
    return int(at // period)


def totp(secret: bytes, at: float, *, digits: int = TOTP_DIGITS, digest: str = "sha1") -> str:
    return hotp(secret, time_step(at), digits=digits, digest=digest)


def matching_steps(secret: bytes, code: str, *, at: float) -> list[int]:
    """The time steps around `at` whose code `code` is, oldest first (each compared in constant time)."""
    now = time_step(at)
    steps = range(now - TOTP_STEPS_EITHER_SIDE, now + TOTP_STEPS_EITHER_SIDE + 1)
    return [step for step in steps if hmac.compare_digest(hotp(secret, step).encode(), code.encode())]


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def secret_text(secret: bytes) -> str:
    """The secret as authenticator apps take it typed in: base32, without padding."""
    return base64.b32encode(secret).decode().rstrip("=")


def otpauth_uri(secret: bytes, *, account: str, issuer: str = config.MFA_ISSUER) -> str:
    """The Key Uri Format authenticator apps read: otpauth://totp/<issuer>:<account>?secret=...&issuer=..."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": secret_text(secret),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": TOTP_DIGITS,
            "period": TOTP_PERIOD_SECONDS,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def qr_svg(uri: str) -> str:
    """The URI as a QR code, a standalone SVG document (segno)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(buffer, kind="svg", scale=4, border=4, xmldecl=False)
    return buffer.getvalue().decode()


# --- keys derived from SECRET_KEY -----------------------------------------------------------------


def _signing_keys() -> tuple[str, ...]:
    return (str(config.SECRET_KEY), *PREVIOUS_KEYS)


@cache
def _derived_key(secret_key: str, purpose: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"phresh:" + purpose)
    return hkdf.derive(secret_key.encode())


def _sealing_aad(user_id: int) -> bytes:
    return b"phresh:totp-secret:user:%d" % user_id


def seal_secret(secret: bytes, *, user_id: int) -> bytes:
    """AES-256-GCM under the current key: a 12-byte nonce, then the ciphertext and its tag."""
    nonce = secrets.token_bytes(12)
    key = _derived_key(str(config.SECRET_KEY), b"totp-secret")
    return nonce + AESGCM(key).encrypt(nonce, secret, _sealing_aad(user_id))


def open_secret(sealed: bytes, *, user_id: int) -> bytes | None:
    """The secret, under the current key or one from before a rotation; None if none opens it."""
    nonce, ciphertext = sealed[:12], sealed[12:]
    for secret_key in _signing_keys():
        try:
            return AESGCM(_derived_key(secret_key, b"totp-secret")).decrypt(nonce, ciphertext, _sealing_aad(user_id))
        except InvalidTag:
            continue
    return None


def new_recovery_codes() -> list[str]:
    codes = (
        "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        for _ in range(RECOVERY_CODE_COUNT)
    )
    return [f"{code[:4]}-{code[4:8]}-{code[8:]}" for code in codes]


def normalized_code(code: str) -> str:
    """What was typed, without blanks and dashes, in capitals (Crockford's look-alikes mended)."""
    return re.sub(r"[\s-]", "", code).upper()


def recovery_code_hashes(code: str, *, user_id: int) -> list[bytes]:
    """The recovery code's keyed hash under each key (the current one first); [] for no such code."""
    normalized = normalized_code(code).translate(_CROCKFORD_SUBSTITUTES)
    if not RECOVERY_CODE.fullmatch(normalized):
        return []
    message = b"%d:" % user_id + normalized.encode()
    return [
        hmac.new(_derived_key(secret_key, b"recovery-code"), message, hashlib.sha256).digest()
        for secret_key in _signing_keys()
    ]


# --- what the routes and other services use -------------------------------------------------------


async def second_factor_on(db: Database, user_id: int) -> bool:
    return await MfaRepository(db).factor_on(user_id=user_id)


async def count_code_attempt(db: Database, *, user_id: int, token_hash: bytes | None = None) -> Hit:
    """Count one code attempt for the account (and the login challenge); past a limit, take it
    back and raise SecondFactorThrottled. Recorded before the code is checked, as failed logins
    are, so that parallel guesses cannot overtake the count."""
    limits = RateLimitsRepository(db)
    keys = {MFA_ACCOUNT: str(user_id)}
    maxima = {MFA_ACCOUNT: config.MFA_MAX_FAILURES_PER_ACCOUNT}
    if token_hash is not None:
        keys[MFA_TOKEN] = token_hash.hex()
        maxima[MFA_TOKEN] = config.MFA_MAX_FAILURES_PER_TOKEN
    hit = await limits.record_hit(keys=keys, window_seconds=config.LOGIN_FAILURE_WINDOW_SECONDS)
    for bucket, maximum in maxima.items():
        count, retry_after = hit.counts[bucket]
        if count > maximum:
            await limits.forget_hit(hit=hit)
            metrics.RATE_LIMIT_REFUSALS.labels(bucket).inc()
            raise SecondFactorThrottled(retry_after)
    return hit


async def code_accepted(db: Database, *, user_id: int, hit: Hit) -> None:
    """A right code: the account's count of wrong ones starts again (as a right password does)."""
    await RateLimitsRepository(db).clear(bucket=MFA_ACCOUNT, key=str(user_id), hit=hit)


async def take_code(db: Database, *, user_id: int, code: str, at: float | None = None) -> CodeKind | None:
    """Take a code of the user's factor (on): a TOTP code of a step not taken before, or an unused
    recovery code, which is spent. What it was, or None. Not counted: see `check_second_factor`."""
    repo = MfaRepository(db)
    normalized = normalized_code(code)
    if TOTP_CODE.fullmatch(normalized):
        factor = await repo.get_second_factor(user_id=user_id)
        if factor is None or factor.enabled_at is None:
            return None
        secret = open_secret(factor.secret_sealed, user_id=user_id)
        if secret is None:  # sealed under a key no longer configured
            return None
        for step in matching_steps(secret, normalized, at=time.time() if at is None else at):
            if step > factor.last_used_step and await repo.use_step(user_id=user_id, step=step):
                return CodeKind.totp
        return None
    hashes_ = recovery_code_hashes(normalized, user_id=user_id)
    if hashes_ and await repo.use_recovery_code(user_id=user_id, code_hashes=hashes_):
        return CodeKind.recovery_code
    return None


async def check_second_factor(db: Database, user_id: int, code: str) -> bool:
    """Whether `code` is a current TOTP code of the user's factor (each taken once, across
    workers) or one of their unused recovery codes (spent by this call). Wrong codes count against
    the account's limit; past it, SecondFactorThrottled is raised without checking. Call it
    outside a transaction that may roll back, or a wrong code it counts is not counted."""
    hit = await count_code_attempt(db, user_id=user_id)
    if await take_code(db, user_id=user_id, code=code) is None:
        return False
    await code_accepted(db, user_id=user_id, hit=hit)
    return True


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: bytes
    created_at: datetime


async def start_enrolment(db: Database, *, user_id: int) -> Enrolment | None:
    """A new secret, stored sealed and not yet on (replacing an enrolment never confirmed);
    None when the factor is on already."""
    secret = new_secret()
    factor = await MfaRepository(db).start_enrolment(
        user_id=user_id, secret_sealed=seal_secret(secret, user_id=user_id)
    )
    return Enrolment(secret=secret, created_at=factor.created_at) if factor else None


class EnrolmentOutcome(StrEnum):
    enabled = "enabled"
    already_on = "already_on"
    not_started = "not_started"
    wrong_code = "wrong_code"


async def confirm_enrolment(
    db: Database, *, user_id: int, code: str, at: float | None = None
) -> tuple[EnrolmentOutcome, list[str], datetime | None]:
    """Turn the factor on with a current code of the enrolment's secret: the outcome, and when it
    is `enabled`, the ten recovery codes (stored only as hashes) and when it went on."""
    repo = MfaRepository(db)
    factor = await repo.get_second_factor(user_id=user_id)
    if factor is None:
        return EnrolmentOutcome.not_started, [], None
    if factor.enabled_at is not None:
        return EnrolmentOutcome.already_on, [], None
    secret = open_secret(factor.secret_sealed, user_id=user_id)
    normalized = normalized_code(code)
    steps = matching_steps(secret, normalized, at=time.time() if at is None else at) if secret else []
    if not TOTP_CODE.fullmatch(normalized) or not steps:
        return EnrolmentOutcome.wrong_code, [], None
    codes = new_recovery_codes()
    hashes_ = [recovery_code_hashes(code, user_id=user_id)[0] for code in codes]
    enabled_at = await repo.confirm_enrolment(
        user_id=user_id, secret_sealed=factor.secret_sealed, step=steps[-1], recovery_code_hashes=hashes_
    )
    if enabled_at is None:  # another confirmation, or a new enrolment, got there first
        now_on = await repo.factor_on(user_id=user_id)
        return (EnrolmentOutcome.already_on if now_on else EnrolmentOutcome.wrong_code), [], None
    return EnrolmentOutcome.enabled, codes, enabled_at


async def new_recovery_code_set(db: Database, *, user_id: int) -> list[str]:
    """Ten new recovery codes for a factor that is on; every earlier one stops working."""
    codes = new_recovery_codes()
    hashes_ = [recovery_code_hashes(code, user_id=user_id)[0] for code in codes]
    await MfaRepository(db).replace_recovery_codes(user_id=user_id, code_hashes=hashes_)
    return codes


async def create_challenge(db: Database, *, user_id: int, token_version: int, client_address: str) -> str:
    """The mfa_token of a login whose password was right: only its SHA-256 is stored."""
    token = new_random_token()
    token_hash = random_token_hash(token)
    assert token_hash is not None  # a token just made has the form
    await MfaRepository(db).create_challenge(
        token_hash=token_hash,
        user_id=user_id,
        token_version=token_version,
        client_address=client_address,
        seconds=MFA_CHALLENGE_SECONDS,
    )
    return token
