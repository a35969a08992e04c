"""Models built from stored rows without validating them again (app.models.core.construct) are
the models validation or `model_construct` would build: the same values, the same JSON."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from databases import Database
from pydantic import BaseModel

from app.db.repositories.base import as_dict
from app.db.repositories.cleanings import cleaning_from_row
from app.db.repositories.feed import FETCH_CLEANING_JOBS_FEED_QUERY, FeedRepository
from app.db.repositories.users import GET_USER_BY_ID_QUERY, PROFILE_FIELDS, USER_FIELDS, named_profile, user_from_row
from app.models.cleaning import CleaningInDB, CleaningPublic
from app.models.core import construct
from app.models.feed import CleaningFeedItem
from app.models.profile import ProfilePublic
from app.models.user import UserInDB, UserPublic

NOW = datetime(2026, 11, 29, 12, 30, 15, 123456, tzinfo=UTC)
USER = {
    "email": "someone@example.com",
    "username": "someone",
    "email_verified": True,
    "is_active": True,
    "is_superuser": False,
    "created_at": NOW,
    "updated_at": NOW,
    "id": 7,
    "password": "hash",
    "salt": "salt",
    "token_version": 3,
}
PROFILE = {
    "full_name": "Some One",
    "phone_number": "555-0100",
    "bio": "Cleans.",
    "image": "https://example.com/a.png",
    "created_at": NOW,
    "updated_at": NOW,
    "id": 9,
    "user_id": 7,
    "username": "someone",
    "email": "someone@example.com",
}


def user_from_row_validated(row: dict[str, Any], *, prefix: str = "") -> UserInDB | None:
    """user_from_row as it was written before construct: validating the user and the profile."""
    if row[f"{prefix}id"] is None:
        return None
    user = UserInDB.model_validate({field: row[f"{prefix}{field}"] for field in USER_FIELDS})
    if row.get(f"{prefix}profile_id") is not None:
        user.profile = named_profile({field: row[f"{prefix}profile_{field}"] for field in PROFILE_FIELDS}, user)
    return user


def same_instance(built: BaseModel, expected: BaseModel) -> None:
    assert type(built) is type(expected)
    assert built.__dict__ == expected.__dict__
    assert list(built.__dict__) == list(expected.__dict__)
    assert built.model_fields_set == expected.model_fields_set
    assert built.__pydantic_extra__ == expected.__pydantic_extra__
    assert built.__pydantic_private__ == expected.__pydantic_private__
    assert built.model_dump_json() == expected.model_dump_json()


def test_pydantic_keeps_the_instance_state_construct_sets() -> None:
    # A pydantic release that keeps more per instance fails here before anything else does.
    assert BaseModel.__slots__ == ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")


@pytest.mark.parametrize(
    "model, fields",
    (
        (ProfilePublic, PROFILE),
        (UserInDB, {**USER, "profile": None}),
        (UserInDB, {**USER, "profile": ProfilePublic.model_validate(PROFILE)}),
    ),
)
def test_construct_builds_what_model_construct_builds(model: type[BaseModel], fields: dict[str, Any]) -> None:
    in_order = {field: fields[field] for field in model.model_fields}
    same_instance(construct(model, dict(in_order)), model.model_construct(**in_order))


@pytest.mark.parametrize("profile", (None, PROFILE))
def test_the_public_view_of_a_user_is_what_it_was_built_as_before(profile: dict[str, Any] | None) -> None:
    user = UserInDB.model_validate({**USER, "profile": profile})
    # UserPublic.from_user as it was written before construct
    expected = UserPublic.model_construct(
        **user.model_dump(exclude={"password", "salt"}), profile=user.profile, access_token=None
    )
    expected._token_version = user.token_version
    built = UserPublic.from_user(user)
    same_instance(built, expected)
    assert built.token_version == 3


@pytest.mark.parametrize("filled_in", (True, False))
async def test_a_user_read_from_the_database_is_what_validation_builds(
    db: Database, test_user: UserPublic, filled_in: bool
) -> None:
    if filled_in:  # every user has a profile (the database sees to it), empty until filled in
        await db.execute(
            "UPDATE profiles SET full_name = 'Le Bron', phone_number = '555-0100', bio = 'Plays.',"
            " image = 'https://example.com/me.png' WHERE user_id = :user_id",
            {"user_id": test_user.id},
        )
    row = as_dict(await db.fetch_one(GET_USER_BY_ID_QUERY, {"id": test_user.id}))  # type: ignore[arg-type]
    built, expected = user_from_row(row), user_from_row_validated(row)
    assert built is not None
    assert expected is not None
    assert built.__dict__ == expected.__dict__
    assert built.model_dump_json() == expected.model_dump_json()
    assert built.profile is not None
    assert (built.profile.bio is not None) is filled_in


async def test_a_feed_item_is_what_it_was_built_as_before(
    db: Database, test_user: UserPublic, test_cleaning: CleaningInDB
) -> None:
    await db.execute("UPDATE profiles SET bio = 'Plays.' WHERE user_id = :user_id", {"user_id": test_user.id})
    values = {"starting_date": datetime.now(UTC), "starting_id": 0, "page_chunk_size": 20}
    records = await db.fetch_all(FETCH_CLEANING_JOBS_FEED_QUERY, values)
    assert records
    for record in records:
        row = as_dict(record)
        built = FeedRepository(db).populate_cleaning_feed_item(row=row)
        owner = user_from_row_validated(row, prefix="owner_")
        assert owner is not None
        expected = CleaningFeedItem.model_validate(
            {
                **{key: value for key, value in row.items() if not key.startswith("owner_")},
                "owner": UserPublic.from_user(owner),
            }
        )
        assert built.model_dump_json() == expected.model_dump_json()


@pytest.mark.parametrize(
    "price, cleaning_type, description",
    ((Decimal("9.99"), "spot_clean", "a description"), (Decimal("0.10"), "full_clean", None), (None, None, "x")),
)
def test_a_cleaning_from_its_columns_is_what_validation_builds(
    price: Decimal | None, cleaning_type: str | None, description: str | None
) -> None:
    row = {
        "id": 3,
        "name": "a room",
        "description": description,
        "price": price,
        "cleaning_type": cleaning_type,
        "owner": 7,
        "created_at": NOW,
        "updated_at": NOW,
        "row_number": 1,
        "event_type": "is_update",
        "event_timestamp": NOW,
    }
    owner = UserPublic.from_user(UserInDB.model_validate({**USER, "profile": PROFILE}))
    for model in (CleaningPublic, CleaningFeedItem):
        built = cleaning_from_row(model, row, owner=owner)
        expected = model.model_validate({**row, "owner": owner})
        assert built.__dict__ == expected.__dict__
        assert [type(value) for value in built.__dict__.values()] == [
            type(value) for value in expected.__dict__.values()
        ]
        assert built.model_dump_json() == expected.model_dump_json()
