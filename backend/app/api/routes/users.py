from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, status

from app.api.dependencies.database import get_repository
from app.db.errors import EmailAlreadyTakenError, UsernameAlreadyTakenError
from app.db.repositories.users import UsersRepository
from app.models.token import AccessToken
from app.models.user import UserCreate, UserPublic
from app.services import auth_service

router = APIRouter()

UsersRepo = Annotated[UsersRepository, Depends(get_repository(UsersRepository))]

EMAIL_TAKEN = "That email is already taken. Login with that email or register with another one."
USERNAME_TAKEN = "That username is already taken. Please try another one."


@router.post(
    "/",
    response_model=UserPublic,
    name="users:register-new-user",
    status_code=status.HTTP_201_CREATED,
)
async def register_new_user(
    new_user: Annotated[UserCreate, Body(embed=True)],
    user_repo: UsersRepo,
) -> UserPublic:
    try:
        created_user = await user_repo.register_new_user(new_user=new_user)
    except EmailAlreadyTakenError as exc:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=EMAIL_TAKEN) from exc
    except UsernameAlreadyTakenError as exc:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=USERNAME_TAKEN) from exc

    token = auth_service.create_access_token_for_user(user=created_user)
    assert token is not None  # a registered user always gets one
    access_token = AccessToken(access_token=token, token_type="bearer")  # noqa: S106 - the OAuth2 token type, not a secret
    return UserPublic(**created_user.model_dump(exclude={"password", "salt"}), access_token=access_token)
