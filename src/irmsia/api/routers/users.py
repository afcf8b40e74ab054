"""User administration (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, status

from irmsia.api.deps import get_container, get_ctx
from irmsia.api.routers import API_PREFIX
from irmsia.api.schemas.users import PasswordReset, UserCreate, UserCreated, UserPublic, UserUpdate
from irmsia.bootstrap import Container
from irmsia.usecases.context import RequestContext

router = APIRouter(prefix=f"{API_PREFIX}/users", tags=["users"])


@router.get("", response_model=list[UserPublic], summary="List accounts")
def list_users(
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in container.accounts.list(ctx, offset=offset, limit=limit)]


@router.post("", response_model=UserCreated, status_code=status.HTTP_201_CREATED, summary="Create an account")
def create_user(
    body: UserCreate, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> UserCreated:
    created = container.accounts.create(ctx, body.username, body.role.value, body.password)
    return UserCreated.model_validate(created.user).model_copy(
        update={"one_time_password": created.one_time_password}
    )


@router.get("/{user_id}", response_model=UserPublic, summary="One account")
def get_user(
    user_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> UserPublic:
    return UserPublic.model_validate(container.accounts.get(ctx, user_id))


@router.patch("/{user_id}", response_model=UserPublic, summary="Change role or disable")
def update_user(
    user_id: str,
    body: UserUpdate,
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> UserPublic:
    user = container.accounts.get(ctx, user_id)
    if body.role is not None:
        user = container.accounts.set_role(ctx, user_id, body.role.value)
    if body.disabled is not None:
        user = container.accounts.set_disabled(ctx, user_id, body.disabled)
    return UserPublic.model_validate(user)


@router.post("/{user_id}/reset-password", response_model=PasswordReset, summary="Issue a one-time password")
def reset_password(
    user_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> PasswordReset:
    return PasswordReset(one_time_password=container.accounts.reset_password(ctx, user_id))
