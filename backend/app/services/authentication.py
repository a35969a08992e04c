from datetime import UTC, datetime, timedelta

import bcrypt
import jwt
from passlib.context import CryptContext

from app.core.config import (
    ACCESS_TOKEN_EXPIRE_MINUTES,
    BCRYPT_ROUNDS,
    JWT_ALGORITHM,
    JWT_AUDIENCE,
    SECRET_KEY,
)
from app.models.token import JWTCreds, JWTMeta, JWTPayload
from app.models.user import UserInDB, UserPasswordUpdate

# bcrypt reads at most 72 bytes (bcrypt 5 raises past that, older releases cut silently), and the
# tutorial hashes password + a 29-character salt. bcrypt_sha256 runs HMAC-SHA256 over the input
# first, so every byte of any password counts and no length can fail.
pwd_context = CryptContext(schemes=["bcrypt_sha256"], deprecated="auto", bcrypt_sha256__rounds=BCRYPT_ROUNDS)


class AuthException(Exception):
    """Raised by the auth service; routes and dependencies turn it into an HTTP answer."""


class AuthService:
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
        verified: bool = pwd_context.verify(password + salt, hashed_pw)
        return verified

    def create_access_token_for_user(
        self,
        *,
        user: UserInDB | None,
        secret_key: str = str(SECRET_KEY),
        audience: str = JWT_AUDIENCE,
        expires_in: int = ACCESS_TOKEN_EXPIRE_MINUTES,
    ) -> str | None:
        if not isinstance(user, UserInDB):
            return None
        now = datetime.now(UTC)
        meta = JWTMeta(
            aud=audience,
            iat=int(now.timestamp()),
            exp=int((now + timedelta(minutes=expires_in)).timestamp()),
        )
        creds = JWTCreds(sub=user.email, username=user.username)
        payload = JWTPayload(**meta.model_dump(), **creds.model_dump())
        return jwt.encode(payload.model_dump(), secret_key, algorithm=JWT_ALGORITHM)
