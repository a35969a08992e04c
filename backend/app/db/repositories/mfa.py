"""The second factor: a user's TOTP secret (sealed), its recovery codes (keyed hashes) and the
challenges of logins waiting for a code. What is secret is sealed or hashed by the caller
(app/services/mfa.py); this module only stores it, and lets the database settle every race."""

from datetime import datetime

from app.db.repositories.base import BaseRepository, as_dict
from app.models.mfa import MfaChallengeInDB, SecondFactorInDB

SECOND_FACTOR_COLUMNS = "user_id, secret_sealed, created_at, enabled_at, last_used_step"

GET_SECOND_FACTOR_QUERY = f"SELECT {SECOND_FACTOR_COLUMNS} FROM second_factors WHERE user_id = :user_id;"

FACTOR_ON_QUERY = "SELECT EXISTS (SELECT 1 FROM second_factors WHERE user_id = :user_id AND enabled_at IS NOT NULL);"

# A new enrolment replaces one that was never confirmed, never a factor that is on.
START_ENROLMENT_QUERY = f"""
    INSERT INTO second_factors (user_id, secret_sealed)
    VALUES (:user_id, :secret_sealed)
    ON CONFLICT (user_id) DO UPDATE
    SET secret_sealed = EXCLUDED.secret_sealed, created_at = now(), last_used_step = 0
    WHERE second_factors.enabled_at IS NULL
    RETURNING {SECOND_FACTOR_COLUMNS};
"""

# The factor goes on only if it is still the enrolment whose secret the code was checked against
# (not one started again meanwhile) and no other confirmation got there first: of two at once,
# the second waits for the first's row lock, then finds `enabled_at` set and changes nothing.
CONFIRM_ENROLMENT_QUERY = f"""
    UPDATE second_factors
    SET enabled_at = now(), last_used_step = :step
    WHERE user_id = :user_id AND enabled_at IS NULL AND secret_sealed = :secret_sealed AND last_used_step < :step
    RETURNING {SECOND_FACTOR_COLUMNS};
"""

# A code is taken once: only a time step later than the last one taken moves `last_used_step`,
# and the row lock orders two workers presenting the same code (the second updates nothing).
USE_STEP_QUERY = """
    UPDATE second_factors
    SET last_used_step = :step
    WHERE user_id = :user_id AND enabled_at IS NOT NULL AND last_used_step < :step
    RETURNING user_id;
"""

DELETE_RECOVERY_CODES_QUERY = "DELETE FROM recovery_codes WHERE user_id = :user_id;"

INSERT_RECOVERY_CODES_QUERY = """
    INSERT INTO recovery_codes (user_id, code_hash)
    SELECT :user_id, unnest(CAST(:code_hashes AS bytea[]));
"""

# `:code_hashes`: the code's hash under each key (the current one and those before a rotation).
USE_RECOVERY_CODE_QUERY = """
    UPDATE recovery_codes
    SET used_at = now()
    WHERE id = (
        SELECT r.id
        FROM recovery_codes r JOIN second_factors f ON f.user_id = r.user_id AND f.enabled_at IS NOT NULL
        WHERE r.user_id = :user_id AND r.code_hash = ANY(CAST(:code_hashes AS bytea[])) AND r.used_at IS NULL
        LIMIT 1
    ) AND used_at IS NULL
    RETURNING id;
"""

RECOVERY_CODES_LEFT_QUERY = "SELECT count(*) FROM recovery_codes WHERE user_id = :user_id AND used_at IS NULL;"

# Everything of the factor goes: the secret, the codes and the logins waiting for a code.
REMOVE_FACTOR_QUERY = """
    WITH factor AS (
        DELETE FROM second_factors WHERE user_id = :user_id RETURNING user_id, enabled_at
    ), codes AS (
        DELETE FROM recovery_codes WHERE user_id = :user_id
    ), challenges AS (
        DELETE FROM mfa_challenges WHERE user_id = :user_id
    )
    SELECT enabled_at FROM factor;
"""

# A user's expired challenges go when they start a new one: the table holds only live ones, and
# the last day's of each user.
CREATE_CHALLENGE_QUERY = """
    WITH old AS (
        DELETE FROM mfa_challenges WHERE user_id = :user_id AND expires_at < now() - interval '1 day'
    )
    INSERT INTO mfa_challenges (token_hash, user_id, token_version, client_address, expires_at)
    VALUES (:token_hash, :user_id, :token_version, :client_address, now() + make_interval(secs => :seconds))
    RETURNING expires_at;
"""

CHALLENGE_COLUMNS = "c.token_hash, c.user_id, c.expires_at"

# A challenge serves while unused and unexpired, and while its account is active with the token
# version it was made under (a password change or a deactivation in between voids it).
LIVE_CHALLENGE_QUERY = f"""
    SELECT {CHALLENGE_COLUMNS}
    FROM mfa_challenges c JOIN users u ON u.id = c.user_id
    WHERE c.token_hash = :token_hash AND c.used_at IS NULL AND c.expires_at > now()
      AND u.token_version = c.token_version AND u.is_active;
"""

SPEND_CHALLENGE_QUERY = f"""
    UPDATE mfa_challenges c
    SET used_at = now()
    FROM users u
    WHERE c.token_hash = :token_hash AND c.used_at IS NULL AND c.expires_at > now()
      AND u.id = c.user_id AND u.token_version = c.token_version AND u.is_active
    RETURNING {CHALLENGE_COLUMNS};
"""

PURGE_CHALLENGES_QUERY = "DELETE FROM mfa_challenges WHERE expires_at < now() - interval '1 day';"


class MfaRepository(BaseRepository):
    async def get_second_factor(self, *, user_id: int) -> SecondFactorInDB | None:
        record = await self.db.fetch_one(GET_SECOND_FACTOR_QUERY, {"user_id": user_id})
        return SecondFactorInDB.model_validate(as_dict(record)) if record else None

    async def factor_on(self, *, user_id: int) -> bool:
        return bool(await self.db.fetch_val(FACTOR_ON_QUERY, {"user_id": user_id}))

    async def start_enrolment(self, *, user_id: int, secret_sealed: bytes) -> SecondFactorInDB | None:
        """Store a new, unconfirmed secret; None when the factor is on already."""
        record = await self.db.fetch_one(START_ENROLMENT_QUERY, {"user_id": user_id, "secret_sealed": secret_sealed})
        return SecondFactorInDB.model_validate(as_dict(record)) if record else None

    async def confirm_enrolment(
        self, *, user_id: int, secret_sealed: bytes, step: int, recovery_code_hashes: list[bytes]
    ) -> datetime | None:
        """Turn the factor on, with these recovery codes (any earlier ones go), all or nothing.
        When it was turned on, or None if this enrolment is not the one waiting any more."""
        async with self.db.transaction():
            record = await self.db.fetch_one(
                CONFIRM_ENROLMENT_QUERY, {"user_id": user_id, "secret_sealed": secret_sealed, "step": step}
            )
            if record is None:
                return None
            await self._replace_recovery_codes(user_id=user_id, code_hashes=recovery_code_hashes)
        return SecondFactorInDB.model_validate(as_dict(record)).enabled_at

    async def replace_recovery_codes(self, *, user_id: int, code_hashes: list[bytes]) -> None:
        async with self.db.transaction():
            await self._replace_recovery_codes(user_id=user_id, code_hashes=code_hashes)

    async def _replace_recovery_codes(self, *, user_id: int, code_hashes: list[bytes]) -> None:
        await self.db.execute(DELETE_RECOVERY_CODES_QUERY, {"user_id": user_id})
        await self.db.execute(INSERT_RECOVERY_CODES_QUERY, {"user_id": user_id, "code_hashes": code_hashes})

    async def use_step(self, *, user_id: int, step: int) -> bool:
        """Take the code of time step `step`: False if a code of this step or a later one was taken."""
        return await self.db.fetch_one(USE_STEP_QUERY, {"user_id": user_id, "step": step}) is not None

    async def use_recovery_code(self, *, user_id: int, code_hashes: list[bytes]) -> bool:
        """Spend the unused recovery code that has one of these hashes, if the factor is on."""
        record = await self.db.fetch_one(USE_RECOVERY_CODE_QUERY, {"user_id": user_id, "code_hashes": code_hashes})
        return record is not None

    async def recovery_codes_left(self, *, user_id: int) -> int:
        return int(await self.db.fetch_val(RECOVERY_CODES_LEFT_QUERY, {"user_id": user_id}))

    async def remove_factor(self, *, user_id: int) -> bool:
        """Take the factor away (on or only begun), with its codes and waiting logins: whether it was on."""
        record = await self.db.fetch_one(REMOVE_FACTOR_QUERY, {"user_id": user_id})
        return record is not None and record["enabled_at"] is not None

    async def create_challenge(
        self, *, token_hash: bytes, user_id: int, token_version: int, client_address: str | None, seconds: int
    ) -> datetime:
        values = {
            "token_hash": token_hash,
            "user_id": user_id,
            "token_version": token_version,
            "client_address": client_address,
            "seconds": float(seconds),
        }
        expires_at: datetime = await self.db.fetch_val(CREATE_CHALLENGE_QUERY, values)
        return expires_at

    async def live_challenge(self, *, token_hash: bytes) -> MfaChallengeInDB | None:
        record = await self.db.fetch_one(LIVE_CHALLENGE_QUERY, {"token_hash": token_hash})
        return MfaChallengeInDB.model_validate(as_dict(record)) if record else None

    async def spend_challenge(self, *, token_hash: bytes) -> MfaChallengeInDB | None:
        """Use a live challenge up (once: of two at once, one gets it)."""
        record = await self.db.fetch_one(SPEND_CHALLENGE_QUERY, {"token_hash": token_hash})
        return MfaChallengeInDB.model_validate(as_dict(record)) if record else None

    async def purge_challenges(self) -> None:
        await self.db.execute(PURGE_CHALLENGES_QUERY)
