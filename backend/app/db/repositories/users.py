from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, overload
from uuid import UUID

import asyncpg
from databases import Database
from databases.interfaces import Record

from app.core import metrics
from app.db.errors import EmailAlreadyTakenError, UsernameAlreadyTakenError
from app.db.json_rows import NULL, model_json, nested
from app.db.repositories.base import MAX_ID, BaseRepository, alive_ended_count, as_dict
from app.db.repositories.outbox import MailKind, OutboxRepository
from app.db.repositories.profiles import PROFILE_COLUMNS, ProfilesRepository
from app.models.core import construct
from app.models.profile import ProfileCreate, ProfilePublic
from app.models.session import SessionEndReason
from app.models.user import MAX_PASSWORD_LENGTH, UserCreate, UserInDB, UserPasswordUpdate, UserPublic, UserUpdate
from app.services import auth_service, hashing_pool

# No stored email or username is longer (email-validator caps addresses at 254 characters).
MAX_LOGIN_LENGTH = 320

USER_FIELDS = (
    "id",
    "username",
    "email",
    "email_verified",
    "password",
    "salt",
    "is_active",
    "is_superuser",
    "token_version",
    "created_at",
    "updated_at",
)
USER_COLUMNS = ", ".join(USER_FIELDS)
PROFILE_FIELDS = tuple(PROFILE_COLUMNS.split(", "))


def user_with_profile_columns(*, prefix: str = "") -> str:
    """The select list of a user (table alias `u`) and their profile (alias `p`), each column
    named `<prefix><column>` and `<prefix>profile_<column>`: read back with `user_from_row`."""
    return ", ".join(
        [f"u.{field} AS {prefix}{field}" for field in USER_FIELDS]
        + [f"p.{field} AS {prefix}profile_{field}" for field in PROFILE_FIELDS]
    )


def named_profile(profile: Mapping[str, Any], user: UserInDB) -> ProfilePublic:
    """A profile's columns, shown under its user's username and email."""
    return ProfilePublic.model_validate({**profile, "username": user.username, "email": user.email})


@cache
def _user_and_profile_columns(prefix: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """The (field, column) pairs of a user (UserInDB's fields, but its profile) and of their
    profile (ProfilePublic's fields, but the names), under `prefix`, in each model's field order."""
    user = tuple((field, f"{prefix}{field}") for field in UserInDB.model_fields if field != "profile")
    named = ("username", "email")
    profile = tuple((field, f"{prefix}profile_{field}") for field in ProfilePublic.model_fields if field not in named)
    return user, profile


def user_from_row(row: Mapping[str, Any], *, prefix: str = "") -> UserInDB | None:
    """The user a row holds under `prefix` (None when the join found none), with their profile."""
    user_columns, profile_columns = _user_and_profile_columns(prefix)
    if row[f"{prefix}id"] is None:
        return None
    # Built as they are stored, not validated again (as UserPublic.from_user builds its view): the
    # columns have the fields' types, and this runs for every authenticated request and for every
    # owner and offerer a page shows (tests/test_models.py checks it builds what validation would).
    fields = {field: row[column] for field, column in user_columns}
    profile = None
    if row.get(f"{prefix}profile_id") is not None:
        profile_fields = {field: row[column] for field, column in profile_columns}
        profile_fields["username"], profile_fields["email"] = fields["username"], fields["email"]
        profile = construct(ProfilePublic, profile_fields)
    fields["profile"] = profile
    return construct(UserInDB, fields)


def user_json(*, prefix: str) -> str:
    """SQL: the JSON of the public view of the user a row holds under `prefix`, with their profile,
    or null: what `UserPublic.from_user(user_from_row(row, prefix=prefix))` serializes to."""
    profile = {field: f"{prefix}profile_{field}" for field in ProfilePublic.model_fields}
    profile["username"], profile["email"] = f"{prefix}username", f"{prefix}email"
    user = {field: f"{prefix}{field}" for field in UserPublic.model_fields}
    user["access_token"] = NULL
    user["profile"] = nested(model_json(ProfilePublic, profile), present=f"{prefix}profile_id IS NOT NULL")
    return nested(model_json(UserPublic, user), present=f"{prefix}id IS NOT NULL")


# Every user is read with their profile (one per user, the database enforces it), in the same
# round trip: a LEFT JOIN through the unique index on profiles.user_id.
_WITH_PROFILE = f"""
    SELECT {user_with_profile_columns()}{{more_columns}}
    FROM {{source}} u
    LEFT JOIN profiles p ON p.user_id = u.id
"""


def _select_with_profile(where: str) -> str:
    return _WITH_PROFILE.format(source="users", more_columns="") + f"WHERE {where};"


def _write_with_profile(statement: str, *, also: str = "", more_columns: str = "") -> str:
    """A write to users that answers with the written row and its profile; `also`, more
    statements to run with it (`name AS (statement)`, comma first), all or none; `more_columns`,
    more of the answer's columns (comma first), which `user_from_row` leaves alone."""
    written = f"WITH written AS ({statement} RETURNING {USER_COLUMNS}){also}"
    return written + _WITH_PROFILE.format(source="written", more_columns=more_columns) + ";"


GET_USER_BY_ID_QUERY = _select_with_profile("u.id = :id")

# Emails and usernames are unique whatever their case (unique indexes on lower()), and are
# looked up the same way, through those indexes.
GET_USER_BY_EMAIL_QUERY = _select_with_profile("lower(u.email) = lower(:email)")

GET_USER_BY_USERNAME_QUERY = _select_with_profile("lower(u.username) = lower(:username)")

REGISTER_NEW_USER_QUERY = f"""
    INSERT INTO users (username, email, password, salt)
    VALUES (:username, :email, :password, :salt)
    RETURNING {USER_COLUMNS};
"""

# A new email is not verified yet, whatever the old one was.
UPDATE_USER_QUERY = _write_with_profile(
    """
    UPDATE users
    SET email = CAST(:email AS text),
        username = CAST(:username AS text),
        email_verified = email_verified AND email = CAST(:email AS text)
    WHERE id = :id
    """
)

# A stronger hash of the same password (a raised cost, a newer scheme): no tokens are revoked, and
# it applies only if the password did not change in the meantime.
REHASH_PASSWORD_QUERY = """
    UPDATE users
    SET password = :new_hash
    WHERE id = :id AND password = :old_hash;
"""

# Bumping the token version revokes every access token minted before the change, and every
# session but the caller's (`:keep_session`, which may be null) ends with it (`sessions_ended`:
# how many of them were alive, for the metrics).
UPDATE_PASSWORD_QUERY = _write_with_profile(
    """
    UPDATE users
    SET password = :password,
        salt = :salt,
        token_version = token_version + 1
    WHERE id = :id
    """,
    also=f"""
    , other_sessions AS (
        UPDATE sessions SET ended_at = now(), end_reason = '{SessionEndReason.password_change.value}'
        WHERE user_id = :id AND ended_at IS NULL AND id IS DISTINCT FROM CAST(:keep_session AS uuid)
        RETURNING expires_at, last_used_at
    )
    """,
    more_columns=f", {alive_ended_count('other_sessions')} AS sessions_ended",
)

# Deactivating ends every session of the user and bumps the token version: nothing from before it
# works again after a reactivation (`sessions_ended`: how many of them were alive, for the metrics).
SET_USER_ACTIVE_QUERY = _write_with_profile(
    """
    UPDATE users
    SET is_active = CAST(:is_active AS boolean),
        token_version = token_version + CASE WHEN is_active AND NOT CAST(:is_active AS boolean) THEN 1 ELSE 0 END
    WHERE id = :id AND deleted_at IS NULL
    """,
    also=f"""
    , sessions_ended AS (
        UPDATE sessions SET ended_at = now(), end_reason = '{SessionEndReason.deactivation.value}'
        WHERE user_id = :id AND ended_at IS NULL AND NOT CAST(:is_active AS boolean)
        RETURNING expires_at, last_used_at
    )
    """,
    more_columns=f", {alive_ended_count('sessions_ended')} AS sessions_ended",
)

MAKE_SUPERUSER_QUERY = _write_with_profile(
    """
    UPDATE users
    SET is_superuser = true,
        is_active = true
    WHERE id = :id AND deleted_at IS NULL
    """
)

# Deleted accounts (tombstones, app/db/repositories/account.py) are no users any more: a deactivation,
# a reactivation, a promotion or the list never finds them.
LIST_USERS_QUERY = (
    _WITH_PROFILE.format(source="users", more_columns="")
    + "WHERE u.deleted_at IS NULL ORDER BY u.id LIMIT :limit OFFSET :offset;"
)

COUNT_USERS_QUERY = """
    SELECT count(*) FROM users WHERE deleted_at IS NULL;
"""

# The unique indexes of the first migration, and what each one means when a write hits it.
UNIQUE_INDEX_ERRORS: dict[str, type[Exception]] = {
    "ix_users_email": EmailAlreadyTakenError,
    "ix_users_username": UsernameAlreadyTakenError,
}


def _taken_error(exc: asyncpg.UniqueViolationError) -> Exception:
    error = UNIQUE_INDEX_ERRORS.get(exc.constraint_name or "")
    if error is None:
        raise exc
    return error()


def _user_from_record(record: Record) -> UserInDB:
    user = user_from_row(as_dict(record))
    assert user is not None  # a row of users
    return user


class UsersRepository(BaseRepository):
    """Lookups return the public view of a user with their profile (`UserPublic`), or, with
    `populate=False`, the stored user with password hash, salt and token version (`UserInDB`)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.auth_service = auth_service
        self.hashing = hashing_pool
        self.profiles_repo = ProfilesRepository(db)
        self.outbox = OutboxRepository(db)

    async def _fetch_user(self, query: str, values: dict[str, object]) -> UserInDB | None:
        record = await self.db.fetch_one(query=query, values=values)
        return _user_from_record(record) if record else None

    async def _write_user(self, query: str, values: dict[str, object]) -> UserInDB | None:
        """Run an INSERT or UPDATE of users; a unique index it hits becomes an "already taken" error."""
        try:
            return await self._fetch_user(query, values)
        except asyncpg.UniqueViolationError as exc:
            raise _taken_error(exc) from exc

    @overload
    async def get_user_by_id(self, *, user_id: int, populate: Literal[True] = True) -> UserPublic | None: ...
    @overload
    async def get_user_by_id(self, *, user_id: int, populate: Literal[False]) -> UserInDB | None: ...
    async def get_user_by_id(self, *, user_id: int, populate: bool = True) -> UserPublic | UserInDB | None:
        if not 1 <= user_id <= MAX_ID:
            return None
        return self._populated(await self._fetch_user(GET_USER_BY_ID_QUERY, {"id": user_id}), populate)

    @overload
    async def get_user_by_email(self, *, email: str, populate: Literal[True] = True) -> UserPublic | None: ...
    @overload
    async def get_user_by_email(self, *, email: str, populate: Literal[False]) -> UserInDB | None: ...
    async def get_user_by_email(self, *, email: str, populate: bool = True) -> UserPublic | UserInDB | None:
        return self._populated(await self._fetch_user(GET_USER_BY_EMAIL_QUERY, {"email": email}), populate)

    @overload
    async def get_user_by_username(self, *, username: str, populate: Literal[True] = True) -> UserPublic | None: ...
    @overload
    async def get_user_by_username(self, *, username: str, populate: Literal[False]) -> UserInDB | None: ...
    async def get_user_by_username(self, *, username: str, populate: bool = True) -> UserPublic | UserInDB | None:
        user = await self._fetch_user(GET_USER_BY_USERNAME_QUERY, {"username": username})
        return self._populated(user, populate)

    def _populated(self, user: UserInDB | None, populate: bool) -> UserPublic | UserInDB | None:
        if user is None or not populate:
            return user
        return UserPublic.from_user(user)

    async def populate_user(self, *, user: UserInDB) -> UserPublic:
        """The public view of a stored user, with their profile."""
        if user.profile is None:
            profile = await self.profiles_repo.get_profile_by_user_id(user_id=user.id)
            if profile is not None:
                user = user.model_copy(update={"profile": named_profile(profile.model_dump(), user)})
        return UserPublic.from_user(user)

    async def register_new_user(self, *, new_user: UserCreate) -> UserPublic:
        """Create the user and their (empty) profile, in one transaction; return the populated user."""
        # Cheap checks first, so that a taken name costs no hashing ...
        if await self.get_user_by_email(email=new_user.email, populate=False):
            raise EmailAlreadyTakenError
        if await self.get_user_by_username(username=new_user.username, populate=False):
            raise UsernameAlreadyTakenError
        # bcrypt is deliberately slow: it runs in the hashing pool, so the event loop keeps serving.
        password_update = await self.hashing.run(
            self.auth_service.create_salt_and_hashed_password, plaintext_password=new_user.password
        )
        # ... and the unique indexes settle a race between two registrations of the same name.
        values = {"username": new_user.username, "email": new_user.email, **password_update.model_dump()}
        async with self.db.transaction():  # the user, their profile and the mail that verifies their email
            created = await self._write_user(REGISTER_NEW_USER_QUERY, values)
            assert created is not None  # INSERT ... RETURNING always returns the row
            profile = await self.profiles_repo.create_profile_for_user(profile_create=ProfileCreate(user_id=created.id))
            await self.outbox.enqueue(kind=MailKind.email_verification, recipient=created.email, user_id=created.id)
        created.profile = named_profile(profile.model_dump(), created)
        return UserPublic.from_user(created)

    async def authenticate_user(self, *, email: str, password: str) -> UserInDB | None:
        """The user with this email (or username) and password, or None; never says which was wrong."""
        user, verified = await self.check_credentials(login=email, password=password)
        return user if verified else None

    async def check_credentials(self, *, login: str, password: str) -> tuple[UserInDB | None, bool]:
        """The user the login names (if any), and whether the password is theirs.

        Costs one password check whatever happens, so that timing does not tell whether the
        account exists; re-hashes a stored hash made with an outdated cost or scheme.
        """
        user = await self.get_user_by_login(login=login)
        if user is None or len(password) > MAX_PASSWORD_LENGTH:
            # No stored password is longer (and passlib refuses over 4 kB): fail, at the usual cost.
            await self.hashing.run(self.auth_service.verify_nothing, password=password[:MAX_PASSWORD_LENGTH])
            return user, False
        verified, new_hash = await self.hashing.run(
            self.auth_service.verify_and_update_password, password=password, salt=user.salt, hashed_pw=user.password
        )
        if not verified:
            return user, False
        if new_hash is not None:
            await self.db.execute(
                query=REHASH_PASSWORD_QUERY, values={"id": user.id, "new_hash": new_hash, "old_hash": user.password}
            )
            user = user.model_copy(update={"password": new_hash})
        return user, True

    async def get_user_by_login(self, *, login: str) -> UserInDB | None:
        # What no stored user can match would only reach the driver to make it raise (NUL bytes).
        if not login or len(login) > MAX_LOGIN_LENGTH or "\x00" in login:
            return None
        if "@" in login:
            return await self.get_user_by_email(email=login, populate=False)
        return await self.get_user_by_username(username=login, populate=False)

    async def update_user(self, *, user: UserInDB, user_update: UserUpdate) -> UserInDB:
        changes = user_update.model_dump(exclude_unset=True)
        email, username = changes.get("email", user.email), changes.get("username", user.username)
        # A name that changes (not merely its case: that one is the caller's own) must be free.
        if email.lower() != user.email.lower() and await self.get_user_by_email(email=email, populate=False):
            raise EmailAlreadyTakenError
        if username.lower() != user.username.lower() and await self.get_user_by_username(
            username=username, populate=False
        ):
            raise UsernameAlreadyTakenError
        async with self.db.transaction():  # a new email and the mail that verifies it, or neither
            updated = await self._write_user(UPDATE_USER_QUERY, {"id": user.id, "email": email, "username": username})
            assert updated is not None  # the caller's own row
            if email.lower() != user.email.lower():
                await self.outbox.enqueue(kind=MailKind.email_verification, recipient=email, user_id=user.id)
        return updated

    async def update_password(
        self, *, user: UserInDB, password_update: UserPasswordUpdate, keep_session: UUID | None = None
    ) -> UserInDB:
        """Store a new password: every older access token and every session but `keep_session` end."""
        values = {"id": user.id, "keep_session": keep_session, **password_update.model_dump()}
        record = await self.db.fetch_one(UPDATE_PASSWORD_QUERY, values)
        assert record is not None  # the caller's own row
        # Counted as the statement commits: no caller runs it inside a transaction of its own.
        metrics.count_sessions_ended(SessionEndReason.password_change.value, int(record["sessions_ended"]))
        return _user_from_record(record)

    async def set_user_active(self, *, id: int, is_active: bool) -> UserInDB | None:
        if not 1 <= id <= MAX_ID:
            return None
        record = await self.db.fetch_one(SET_USER_ACTIVE_QUERY, {"id": id, "is_active": is_active})
        if record is None:
            return None
        # Counted as the statement commits: no caller runs it inside a transaction of its own.
        metrics.count_sessions_ended(SessionEndReason.deactivation.value, int(record["sessions_ended"]))
        return _user_from_record(record)

    async def make_superuser(self, *, id: int) -> UserInDB | None:
        return await self._fetch_user(MAKE_SUPERUSER_QUERY, {"id": id})

    async def list_users(self, *, limit: int, offset: int) -> tuple[list[UserInDB], int]:
        """One page of users, oldest first, and how many users there are in all."""
        async with self.db.transaction(isolation="repeatable_read"):  # one snapshot for page and count
            records = await self.db.fetch_all(query=LIST_USERS_QUERY, values={"limit": limit, "offset": offset})
            total = await self.db.fetch_val(query=COUNT_USERS_QUERY)
        return [_user_from_record(record) for record in records], int(total)
