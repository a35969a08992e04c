from app.db.repositories.base import BaseRepository, as_dict
from app.models.profile import ProfileCreate, ProfileInDB, ProfileUpdate
from app.models.user import AnyUser

PROFILE_COLUMNS = "id, full_name, phone_number, bio, image, user_id, created_at, updated_at"
PROFILE_FIELDS = ("full_name", "phone_number", "bio", "image")

CREATE_PROFILE_FOR_USER_QUERY = f"""
    INSERT INTO profiles (full_name, phone_number, bio, image, user_id)
    VALUES (:full_name, :phone_number, :bio, :image, :user_id)
    RETURNING {PROFILE_COLUMNS};
"""

GET_PROFILE_BY_USER_ID_QUERY = f"""
    SELECT {PROFILE_COLUMNS}
    FROM profiles
    WHERE user_id = :user_id;
"""

# Usernames are unique whatever their case, and looked up the same way (the index on lower()).
GET_PROFILE_BY_USERNAME_QUERY = """
    SELECT p.id, p.full_name, p.phone_number, p.bio, p.image, p.user_id, p.created_at, p.updated_at,
           u.username, u.email
    FROM users u
    JOIN profiles p ON p.user_id = u.id
    WHERE lower(u.username) = lower(:username);
"""

# A partial update in one statement: each field is written only when the update sets it, so two
# concurrent updates of different fields both land (no read-modify-write in between).
_SET_IF_GIVEN = ", ".join(
    f"{field} = CASE WHEN :set_{field} THEN CAST(:{field} AS text) ELSE {field} END" for field in PROFILE_FIELDS
)
UPDATE_PROFILE_QUERY = f"""
    UPDATE profiles
    SET {_SET_IF_GIVEN}
    WHERE user_id = :user_id
    RETURNING {PROFILE_COLUMNS};
"""


class ProfilesRepository(BaseRepository):
    async def create_profile_for_user(self, *, profile_create: ProfileCreate) -> ProfileInDB:
        record = await self.db.fetch_one(query=CREATE_PROFILE_FOR_USER_QUERY, values=profile_create.model_dump())
        assert record is not None  # INSERT ... RETURNING always returns the row
        return ProfileInDB.model_validate(as_dict(record))

    async def get_profile_by_user_id(self, *, user_id: int) -> ProfileInDB | None:
        record = await self.db.fetch_one(query=GET_PROFILE_BY_USER_ID_QUERY, values={"user_id": user_id})
        return ProfileInDB.model_validate(as_dict(record)) if record else None

    async def get_profile_by_username(self, *, username: str) -> ProfileInDB | None:
        record = await self.db.fetch_one(query=GET_PROFILE_BY_USERNAME_QUERY, values={"username": username})
        return ProfileInDB.model_validate(as_dict(record)) if record else None

    async def update_profile(self, *, profile_update: ProfileUpdate, requesting_user: AnyUser) -> ProfileInDB:
        """Set the fields the update names (null clears one) on the requesting user's own profile."""
        changes = profile_update.model_dump(exclude_unset=True)
        values: dict[str, object] = {"user_id": requesting_user.id}
        for field in PROFILE_FIELDS:
            values[f"set_{field}"] = field in changes
            values[field] = changes.get(field)
        record = await self.db.fetch_one(query=UPDATE_PROFILE_QUERY, values=values)
        assert record is not None  # every user has a profile: the database enforces it
        profile = ProfileInDB.model_validate(as_dict(record))
        return profile.model_copy(update={"username": requesting_user.username, "email": requesting_user.email})
