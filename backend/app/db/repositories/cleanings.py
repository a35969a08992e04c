from app.db.errors import InvalidCleaningTypeError
from app.db.repositories.base import MAX_ID, BaseRepository, as_dict
from app.models.cleaning import CleaningCreate, CleaningInDB, CleaningUpdate
from app.models.user import UserInDB

CLEANING_COLUMNS = "id, name, description, price, cleaning_type, owner, created_at, updated_at"

CREATE_CLEANING_QUERY = f"""
    INSERT INTO cleanings (name, description, price, cleaning_type, owner)
    VALUES (:name, :description, :price, :cleaning_type, :owner)
    RETURNING {CLEANING_COLUMNS};
"""

GET_CLEANING_BY_ID_QUERY = f"""
    SELECT {CLEANING_COLUMNS}
    FROM cleanings
    WHERE id = :id;
"""

GET_CLEANING_BY_ID_FOR_UPDATE_QUERY = f"""
    SELECT {CLEANING_COLUMNS}
    FROM cleanings
    WHERE id = :id
    FOR UPDATE;
"""

LIST_ALL_USER_CLEANINGS_QUERY = f"""
    SELECT {CLEANING_COLUMNS}
    FROM cleanings
    WHERE owner = :owner
    ORDER BY id;
"""

UPDATE_CLEANING_BY_ID_QUERY = f"""
    UPDATE cleanings
    SET name = :name,
        description = :description,
        price = :price,
        cleaning_type = :cleaning_type
    WHERE id = :id
    RETURNING {CLEANING_COLUMNS};
"""

DELETE_CLEANING_BY_ID_QUERY = """
    DELETE FROM cleanings
    WHERE id = :id
    RETURNING id;
"""


class CleaningsRepository(BaseRepository):
    """All database actions associated with the Cleaning resource."""

    async def create_cleaning(self, *, new_cleaning: CleaningCreate, requesting_user: UserInDB) -> CleaningInDB:
        values = {**new_cleaning.model_dump(), "owner": requesting_user.id}
        record = await self.db.fetch_one(query=CREATE_CLEANING_QUERY, values=values)
        assert record is not None  # INSERT ... RETURNING always returns the row
        return CleaningInDB.model_validate(as_dict(record))

    async def get_cleaning_by_id(self, *, id: int) -> CleaningInDB | None:
        if not 1 <= id <= MAX_ID:
            return None
        record = await self.db.fetch_one(query=GET_CLEANING_BY_ID_QUERY, values={"id": id})
        return CleaningInDB.model_validate(as_dict(record)) if record else None

    async def list_all_user_cleanings(self, *, requesting_user: UserInDB) -> list[CleaningInDB]:
        records = await self.db.fetch_all(query=LIST_ALL_USER_CLEANINGS_QUERY, values={"owner": requesting_user.id})
        return [CleaningInDB.model_validate(as_dict(record)) for record in records]

    async def update_cleaning(self, *, id: int, cleaning_update: CleaningUpdate) -> CleaningInDB | None:
        if not 1 <= id <= MAX_ID:
            return None
        # Read and write under one row lock, so that two concurrent partial updates both land.
        async with self.db.transaction():
            record = await self.db.fetch_one(query=GET_CLEANING_BY_ID_FOR_UPDATE_QUERY, values={"id": id})
            if record is None:
                return None
            cleaning = CleaningInDB.model_validate(as_dict(record))
            updated = cleaning.model_copy(update=cleaning_update.model_dump(exclude_unset=True))
            if updated.cleaning_type is None:
                raise InvalidCleaningTypeError
            record = await self.db.fetch_one(
                query=UPDATE_CLEANING_BY_ID_QUERY,
                values=updated.model_dump(include={"id", "name", "description", "price", "cleaning_type"}),
            )
        assert record is not None  # the row is locked: it is still there
        return CleaningInDB.model_validate(as_dict(record))

    async def delete_cleaning_by_id(self, *, id: int) -> int | None:
        if not 1 <= id <= MAX_ID:
            return None
        deleted_id = await self.db.fetch_val(query=DELETE_CLEANING_BY_ID_QUERY, values={"id": id})
        return int(deleted_id) if deleted_id is not None else None
