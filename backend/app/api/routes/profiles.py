from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, status

from app.api.dependencies.auth import CurrentUser
from app.api.dependencies.database import get_repository
from app.api.errors import error_responses
from app.db.repositories.profiles import ProfilesRepository
from app.models.profile import ProfilePublic, ProfileUpdate
from app.models.user import Username

router = APIRouter()

ProfilesRepo = Annotated[ProfilesRepository, Depends(get_repository(ProfilesRepository))]

PROFILE_NOT_FOUND = "No profile found with that username."


@router.get(
    "/me/",
    response_model=ProfilePublic,
    name="profiles:get-own-profile",
    summary="Get my profile",
    responses=error_responses(401, 503),
)
async def get_own_profile(current_user: CurrentUser) -> ProfilePublic:
    """The caller's own profile (declared before `/{username}/`, which "me" could not match anyway:
    usernames have at least three characters)."""
    assert current_user.profile is not None  # loaded with the user; every user has one
    return current_user.profile


@router.get(
    "/{username}/",
    response_model=ProfilePublic,
    name="profiles:get-profile-by-username",
    summary="Get a user's profile",
    responses=error_responses(401, 404, 503, e404=PROFILE_NOT_FOUND),
)
async def get_profile_by_username(
    current_user: CurrentUser,
    username: Annotated[Username, Path()],
    profiles_repo: ProfilesRepo,
) -> ProfilePublic:
    """Any logged-in user's profile, with their username and email (usernames match whatever their case)."""
    profile = await profiles_repo.get_profile_by_username(username=username)
    if profile is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=PROFILE_NOT_FOUND)
    return ProfilePublic.model_validate(profile.model_dump())


@router.put(
    "/me/",
    response_model=ProfilePublic,
    name="profiles:update-own-profile",
    summary="Update my profile",
    responses=error_responses(400, 401, 413, 503),
)
async def update_own_profile(
    current_user: CurrentUser,
    profile_update: Annotated[ProfileUpdate, Body(embed=True)],
    profiles_repo: ProfilesRepo,
) -> ProfilePublic:
    """Change the caller's full name, phone number, bio or image URL. A field left out keeps its
    value; a field sent as null is cleared."""
    updated = await profiles_repo.update_profile(profile_update=profile_update, requesting_user=current_user)
    return ProfilePublic.model_validate(updated.model_dump())
