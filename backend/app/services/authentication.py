import base64
import hashlib
import re
import secrets
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from uuid import UUID

import bcrypt
import jwt
from fastapi import HTTPException, status
from passlib.context import CryptContext
from pydantic import ValidationError

from app.core.config import (
    ACCESS_TOKEN_EXPIRE_MINUTES,
    BCRYPT_ROUNDS,
    JWT_ALGORITHM,
    JWT_AUDIENCE,
    JWT_LEEWAY_SECONDS,
    SECRET_KEY,
    SECRET_KEY_PREVIOUS,
)
from app.models.token import JWT_ISSUER, JWTCreds, JWTMeta, JWTPayload
from app.models.user import AnyUser, UserInDB, UserPasswordUpdate, UserPublic

# bcrypt reads at most 72 bytes (bcrypt 5 raises past that, older releases cut silently), and the
# tutorial hashes password + a 29-character salt. bcrypt_sha256 runs HMAC-SHA256 over the input
# first, so every byte of any password counts and no length can fail.
# Plain bcrypt (the tutorial's scheme) is still verified, and pinning the cost to exactly
# BCRYPT_ROUNDS marks any other cost as outdated: both are re-hashed at the next successful login.
pwd_context = CryptContext(
    schemes=["bcrypt_sha256", "bcrypt"],
    deprecated=["bcrypt"],
    bcrypt_sha256__rounds=BCRYPT_ROUNDS,
    bcrypt_sha256__min_rounds=BCRYPT_ROUNDS,
    bcrypt_sha256__max_rounds=BCRYPT_ROUNDS,
)

# Keys from before the last rotation, still accepted when verifying.
PREVIOUS_KEYS = tuple(map(str, SECRET_KEY_PREVIOUS))

# How many verified tokens each process remembers (least recently used go first).
VERIFIED_TOKENS_CACHED = 4096

# Claims a token must carry to be accepted at all.
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti", "uid", "ver"]

INVALID_TOKEN = "Could not validate token credentials."


class AuthException(Exception):
    """Raised by the auth service; routes and dependencies turn it into an HTTP answer."""


class AuthService:
    def __init__(self) -> None:
        # Verified against when a login names no known user, so that an unknown email costs the
        # same hashing work as a wrong password and response times do not reveal who has an account.
        self._dummy_salt = self.generate_salt()
        self._dummy_hash = self.hash_password(password="no such user", salt=self._dummy_salt)
        self.dummy_verifications = 0  # how many times that happened: a figure for tests and operators
        self._prepared_keys: dict[str, jwt.PyJWK] = {}
        # Tokens that passed every check, with their claims. A token cannot change, so checking its
        # signature again on its next request would only repeat the same answer; its expiry is
        # checked on every use, and revocation (a password change, a deactivation) is decided from
        # the database on every request, cached or not.
        self._verified: OrderedDict[tuple[str | None, str, tuple[str, ...]], JWTPayload] = OrderedDict()

    def create_salt_and_hashed_password(self, *, plaintext_password: str) -> UserPasswordUpdate:
        salt = self.generate_salt()
        hashed_password = self.hash_password(password=plaintext_password, salt=salt)
        return UserPasswordUpdate(salt=salt, password=hashed_password)

    def generate_salt(self) -> str:
        return bcrypt.gensalt().decode()

    def hash_password(self, *, password: str, salt: str) -> str:
        hashed: str = pwd_context.hash(password + salt)
        return hashed

    def verify_password(self, *, password: str, salt: str, hashed_pw: str) -> bool:
        return self.verify_and_update_password(password=password, salt=salt, hashed_pw=hashed_pw)[0]

    def verify_and_update_password(self, *, password: str, salt: str, hashed_pw: str) -> tuple[bool, str | None]:
        """Whether the password matches, and a new hash to store when the stored one is outdated."""
        try:
            verified, new_hash = pwd_context.verify_and_update(password + salt, hashed_pw)
        except ValueError:
            # A hash this context cannot read, or plain bcrypt refusing input past 72 bytes.
            return False, None
        return bool(verified), new_hash

    def verify_nothing(self, *, password: str) -> bool:
        """Spend the work of one password check and fail: the answer for an unknown user."""
        self.dummy_verifications += 1
        self.verify_password(password=password, salt=self._dummy_salt, hashed_pw=self._dummy_hash)
        return False

    def create_access_token_for_user(
        self,
        *,
        user: AnyUser | None,
        secret_key: str = str(SECRET_KEY),
        audience: str = JWT_AUDIENCE,
        expires_in: int = ACCESS_TOKEN_EXPIRE_MINUTES,
        session_id: UUID | None = None,
        not_after: datetime | None = None,
    ) -> str | None:
        """A signed access token for a stored user, or None for anything else.

        A `UserPublic` qualifies when it was made from a stored user (the repositories make them
        so): a token must carry the user's current token version, which only the database knows.
        The API accepts only tokens of a live session (`session_id`); the token expires after
        `expires_in` minutes, or at `not_after` (its session's end) if that comes first.
        """
        if isinstance(user, UserInDB) or (isinstance(user, UserPublic) and user.token_version is not None):
            token_version = user.token_version
        else:
            return None
        assert user.email is not None and user.username is not None  # a stored user has both
        now = datetime.now(UTC)
        expires_at = now + timedelta(minutes=expires_in)
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        meta = JWTMeta(aud=audience, iat=int(now.timestamp()), exp=int(expires_at.timestamp()))
        creds = JWTCreds(sub=user.email, username=user.username, uid=user.id, ver=token_version, sid=session_id)
        payload = JWTPayload(**meta.model_dump(), **creds.model_dump())
        return jwt.encode(payload.model_dump(mode="json", exclude_none=True), secret_key, algorithm=JWT_ALGORITHM)

    def decode_access_token(
        self,
        *,
        token: str | None,
        secret_key: str = str(SECRET_KEY),
        previous_keys: tuple[str, ...] = PREVIOUS_KEYS,
    ) -> JWTPayload:
        """The claims of a token this service minted, or AuthException.

        The algorithm is pinned (no `alg: none`, no algorithm chosen by the token), and the
        signature, expiry, issue time, audience and issuer are all checked. Tokens signed with a
        previous key (SECRET_KEY_PREVIOUS) stay valid until they expire.
        """
        cache_key = (token, secret_key, previous_keys)
        cached = self._verified.get(cache_key)
        if cached is not None:
            if cached.exp + JWT_LEEWAY_SECONDS > time.time():
                self._verified.move_to_end(cache_key)
                return cached
            del self._verified[cache_key]
            raise AuthException(INVALID_TOKEN)
        claims = self._verify(token=token, secret_key=secret_key, previous_keys=previous_keys)
        self._verified[cache_key] = claims
        if len(self._verified) > VERIFIED_TOKENS_CACHED:
            self._verified.popitem(last=False)
        return claims

    def _verify(self, *, token: str | None, secret_key: str, previous_keys: tuple[str, ...]) -> JWTPayload:
        for key in (secret_key, *previous_keys):
            try:
                claims = jwt.decode(
                    token,  # type: ignore[arg-type]  # None must fail like any other bad token
                    self._verification_key(key),
                    algorithms=[JWT_ALGORITHM],
                    audience=JWT_AUDIENCE,
                    issuer=JWT_ISSUER,
                    leeway=JWT_LEEWAY_SECONDS,
                    options={"require": REQUIRED_CLAIMS},
                )
                return JWTPayload.model_validate(claims)
            except jwt.InvalidSignatureError:
                continue  # perhaps signed before the last key rotation
            except (jwt.PyJWTError, ValidationError) as exc:
                raise AuthException(INVALID_TOKEN) from exc
        raise AuthException(INVALID_TOKEN)

    def _verification_key(self, secret: str) -> jwt.PyJWK:
        """The secret as a prepared HMAC key, made once: PyJWT otherwise re-examines a plain string
        key on every decode (is it PEM? an SSH key?), a tenth of the cost of an authenticated request."""
        key = self._prepared_keys.get(secret)
        if key is None:
            encoded = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
            key = jwt.PyJWK({"kty": "oct", "k": encoded, "alg": JWT_ALGORITHM})
            self._prepared_keys[secret] = key
        return key

    def get_username_from_token(self, *, token: str | None, secret_key: str = str(SECRET_KEY)) -> str:
        """The `username` claim of a valid token (the tutorial's contract: any bad token or key is
        FastAPI's 401). That is the name the user had when the token was minted: show it, never
        look a user up by it (requests are authenticated by the `uid` claim; see JWTCreds)."""
        try:
            return self.decode_access_token(token=token, secret_key=secret_key).username
        except AuthException as exc:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail=INVALID_TOKEN,
                headers={"WWW-Authenticate": "Bearer"},
            ) from exc


# A refresh token, or the token in a mail: 32 random bytes (256 bits) in unpadded base64url.
REFRESH_TOKEN_BYTES = 32
REFRESH_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_random_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(REFRESH_TOKEN_BYTES)).rstrip(b"=").decode()


def random_token_hash(token: str) -> bytes | None:
    """What the database keeps of a random token (SHA-256: the token is random, so a fast hash is
    as good as a slow one), or None for a string no such token could be."""
    if not REFRESH_TOKEN_PATTERN.fullmatch(token):
        return None
    return hashlib.sha256(token.encode()).digest()


def _successor_pad(token: str) -> bytes:
    # A one-time pad only the holder of `token` can make: the database has just the token's hash
    # (SHA-256 of the token alone, a different input), so a copy of it opens no successor.
    return hashlib.sha256(b"phresh:refresh-successor:" + token.encode()).digest()


def seal_successor(*, token: str, successor: str) -> bytes:
    """The successor of a used refresh token, sealed with a key derived from the used token itself,
    so that a client presenting the used token again within the grace window gets the same one."""
    raw = base64.urlsafe_b64decode(successor + "=")
    return bytes(a ^ b for a, b in zip(raw, _successor_pad(token), strict=True))


def open_successor(*, token: str, sealed: bytes) -> str:
    raw = bytes(a ^ b for a, b in zip(sealed, _successor_pad(token), strict=True))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
