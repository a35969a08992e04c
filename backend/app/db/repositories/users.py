import asyncpg
from databases import Database
from starlette.concurrency import run_in_threadpool

from app.db.errors import EmailAlreadyTakenError, UsernameAlreadyTakenError
from app.db.repositories.base import BaseRepository, as_dict
from app.models.user import UserCreate, UserInDB
from app.services import auth_service

USER_COLUMNS = "id, username, email, email_verified, password, salt, is_active, is_superuser, created_at, updated_at"

GET_USER_BY_EMAIL_QUERY = f"""
    SELECT {USER_COLUMNS}
    FROM users
    WHERE email = :email;
"""

GET_USER_BY_USERNAME_QUERY = f"""
    SELECT {USER_COLUMNS}
    FROM users
    WHERE username = :username;
"""

REGISTER_NEW_USER_QUERY = f"""
    INSERT INTO users (username, email, password, salt)
    VALUES (:username, :email, :password, :salt)
    RETURNING {USER_COLUMNS};
"""

# The unique indexes of the first migration, and what each one means when an insert hits it.
UNIQUE_INDEX_ERRORS: dict[str, type[Exception]] = {
    "ix_users_email": EmailAlreadyTakenError,
    "ix_users_username": UsernameAlreadyTakenError,
}


class UsersRepository(BaseRepository):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.auth_service = auth_service

    async def get_user_by_email(self, *, email: str) -> UserInDB | None:
        record = await self.db.fetch_one(query=GET_USER_BY_EMAIL_QUERY, values={"email": email})
        return UserInDB.model_validate(as_dict(record)) if record else None

    async def get_user_by_username(self, *, username: str) -> UserInDB | None:
        record = await self.db.fetch_one(query=GET_USER_BY_USERNAME_QUERY, values={"username": username})
        return UserInDB.model_validate(as_dict(record)) if record else None

    async def register_new_user(self, *, new_user: UserCreate) -> UserInDB:
        # Cheap checks first, so that a taken name costs no hashing ...
        if await self.get_user_by_email(email=new_user.email):
            raise EmailAlreadyTakenError
        if await self.get_user_by_username(username=new_user.username):
            raise UsernameAlreadyTakenError
        # bcrypt is deliberately slow: run it in a worker thread so the event loop keeps serving.
        password_update = await run_in_threadpool(
            self.auth_service.create_salt_and_hashed_password, plaintext_password=new_user.password
        )
        values = {"username": new_user.username, "email": new_user.email, **password_update.model_dump()}
        try:
            record = await self.db.fetch_one(query=REGISTER_NEW_USER_QUERY, values=values)
        except asyncpg.UniqueViolationError as exc:
            # ... and the unique indexes settle a race between two registrations of the same name.
            error = UNIQUE_INDEX_ERRORS.get(exc.constraint_name or "")
            if error is None:
                raise
            raise error from exc
        assert record is not None  # INSERT ... RETURNING always returns the row
        return UserInDB.model_validate(as_dict(record))
