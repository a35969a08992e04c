import asyncpg
from databases import Database

from app.db.errors import EmailAlreadyTakenError, UsernameAlreadyTakenError
from app.db.repositories.base import MAX_ID, BaseRepository, as_dict
from app.models.user import MAX_PASSWORD_LENGTH, UserCreate, UserInDB, UserPasswordUpdate, UserUpdate
from app.services import auth_service, hashing_pool

# No stored email or username is longer (email-validator caps addresses at 254 characters).
MAX_LOGIN_LENGTH = 320

USER_COLUMNS = (
    "id, username, email, email_verified, password, salt, is_active, is_superuser, token_version, "
    "created_at, updated_at"
)

GET_USER_BY_ID_QUERY = f"""
    SELECT {USER_COLUMNS}
    FROM users
    WHERE id = :id;
"""

# Emails and usernames are unique whatever their case (unique indexes on lower()), and are
# looked up the same way, through those indexes.
GET_USER_BY_EMAIL_QUERY = f"""
    SELECT {USER_COLUMNS}
    FROM users
    WHERE lower(email) = lower(:email);
"""

GET_USER_BY_USERNAME_QUERY = f"""
    SELECT {USER_COLUMNS}
    FROM users
    WHERE lower(username) = lower(:username);
"""

REGISTER_NEW_USER_QUERY = f"""
    INSERT INTO users (username, email, password, salt)
    VALUES (:username, :email, :password, :salt)
    RETURNING {USER_COLUMNS};
"""

# A new email is not verified yet, whatever the old one was.
UPDATE_USER_QUERY = f"""
    UPDATE users
    SET email = CAST(:email AS text),
        username = CAST(:username AS text),
        email_verified = email_verified AND email = CAST(:email AS text)
    WHERE id = :id
    RETURNING {USER_COLUMNS};
"""

# A stronger hash of the same password (a raised cost, a newer scheme): no tokens are revoked, and
# it applies only if the password did not change in the meantime.
REHASH_PASSWORD_QUERY = """
    UPDATE users
    SET password = :new_hash
    WHERE id = :id AND password = :old_hash;
"""

# Bumping the token version revokes every token minted before the change.
UPDATE_PASSWORD_QUERY = f"""
    UPDATE users
    SET password = :password,
        salt = :salt,
        token_version = token_version + 1
    WHERE id = :id
    RETURNING {USER_COLUMNS};
"""

SET_USER_ACTIVE_QUERY = f"""
    UPDATE users
    SET is_active = :is_active
    WHERE id = :id
    RETURNING {USER_COLUMNS};
"""

MAKE_SUPERUSER_QUERY = f"""
    UPDATE users
    SET is_superuser = true,
        is_active = true
    WHERE id = :id
    RETURNING {USER_COLUMNS};
"""

LIST_USERS_QUERY = f"""
    SELECT {USER_COLUMNS}
    FROM users
    ORDER BY id
    LIMIT :limit OFFSET :offset;
"""

COUNT_USERS_QUERY = """
    SELECT count(*) FROM users;
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


class UsersRepository(BaseRepository):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.auth_service = auth_service
        self.hashing = hashing_pool

    async def _fetch_user(self, query: str, values: dict[str, object]) -> UserInDB | None:
        record = await self.db.fetch_one(query=query, values=values)
        return UserInDB.model_validate(as_dict(record)) if record else None

    async def _write_user(self, query: str, values: dict[str, object]) -> UserInDB | None:
        """Run an INSERT or UPDATE of users; a unique index it hits becomes an "already taken" error."""
        try:
            return await self._fetch_user(query, values)
        except asyncpg.UniqueViolationError as exc:
            raise _taken_error(exc) from exc

    async def get_user_by_id(self, *, id: int) -> UserInDB | None:
        if not 1 <= id <= MAX_ID:
            return None
        return await self._fetch_user(GET_USER_BY_ID_QUERY, {"id": id})

    async def get_user_by_email(self, *, email: str) -> UserInDB | None:
        return await self._fetch_user(GET_USER_BY_EMAIL_QUERY, {"email": email})

    async def get_user_by_username(self, *, username: str) -> UserInDB | None:
        return await self._fetch_user(GET_USER_BY_USERNAME_QUERY, {"username": username})

    async def register_new_user(self, *, new_user: UserCreate) -> UserInDB:
        # Cheap checks first, so that a taken name costs no hashing ...
        if await self.get_user_by_email(email=new_user.email):
            raise EmailAlreadyTakenError
        if await self.get_user_by_username(username=new_user.username):
            raise UsernameAlreadyTakenError
        # bcrypt is deliberately slow: it runs in the hashing pool, so the event loop keeps serving.
        password_update = await self.hashing.run(
            self.auth_service.create_salt_and_hashed_password, plaintext_password=new_user.password
        )
        # ... and the unique indexes settle a race between two registrations of the same name.
        values = {"username": new_user.username, "email": new_user.email, **password_update.model_dump()}
        created = await self._write_user(REGISTER_NEW_USER_QUERY, values)
        assert created is not None  # INSERT ... RETURNING always returns the row
        return created

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
            return await self.get_user_by_email(email=login)
        return await self.get_user_by_username(username=login)

    async def update_user(self, *, user: UserInDB, user_update: UserUpdate) -> UserInDB:
        changes = user_update.model_dump(exclude_unset=True)
        email, username = changes.get("email", user.email), changes.get("username", user.username)
        # A name that changes (not merely its case: that one is the caller's own) must be free.
        if email.lower() != user.email.lower() and await self.get_user_by_email(email=email):
            raise EmailAlreadyTakenError
        if username.lower() != user.username.lower() and await self.get_user_by_username(username=username):
            raise UsernameAlreadyTakenError
        updated = await self._write_user(UPDATE_USER_QUERY, {"id": user.id, "email": email, "username": username})
        assert updated is not None  # the caller's own row
        return updated

    async def update_password(self, *, user: UserInDB, password_update: UserPasswordUpdate) -> UserInDB:
        values = {"id": user.id, **password_update.model_dump()}
        updated = await self._fetch_user(UPDATE_PASSWORD_QUERY, values)
        assert updated is not None  # the caller's own row
        return updated

    async def set_user_active(self, *, id: int, is_active: bool) -> UserInDB | None:
        if not 1 <= id <= MAX_ID:
            return None
        return await self._fetch_user(SET_USER_ACTIVE_QUERY, {"id": id, "is_active": is_active})

    async def make_superuser(self, *, id: int) -> UserInDB | None:
        return await self._fetch_user(MAKE_SUPERUSER_QUERY, {"id": id})

    async def list_users(self, *, limit: int, offset: int) -> tuple[list[UserInDB], int]:
        """One page of users, oldest first, and how many users there are in all."""
        async with self.db.transaction(isolation="repeatable_read"):  # one snapshot for page and count
            records = await self.db.fetch_all(query=LIST_USERS_QUERY, values={"limit": limit, "offset": offset})
            total = await self.db.fetch_val(query=COUNT_USERS_QUERY)
        return [UserInDB.model_validate(as_dict(record)) for record in records], int(total)
