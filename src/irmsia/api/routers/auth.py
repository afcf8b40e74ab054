"""Login, token refresh, logout, the caller's identity, registration, password change."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, status

from irmsia.api.deps import get_authenticated_ctx, get_container, get_ctx
from irmsia.api.routers import API_PREFIX
from irmsia.api.schemas.auth import LogoutRequest, MePublic, PasswordChange, RefreshRequest, TokenPublic
from irmsia.api.schemas.users import UserCreate, UserCreated
from irmsia.bootstrap import Container
from irmsia.usecases.context import RequestContext

router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"])


@router.post("/login", response_model=TokenPublic, summary="OAuth2 password login")
def login(
    username: Annotated[str, Form(min_length=1, max_length=256)],
    password: Annotated[str, Form(min_length=1, max_length=1024)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> TokenPublic:
    pair = container.auth.login(ctx, username, password)
    return TokenPublic(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post("/refresh", response_model=TokenPublic, summary="Rotate a refresh token")
def refresh(
    body: RefreshRequest,
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> TokenPublic:
    pair = container.auth.refresh(ctx, body.refresh_token)
    return TokenPublic(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke refresh tokens")
def logout(
    body: LogoutRequest | None = None,
    ctx: RequestContext = Depends(get_authenticated_ctx),
    container: Container = Depends(get_container),
) -> None:
    container.auth.logout(ctx, body.refresh_token if body else None)


@router.get("/me", response_model=MePublic, summary="Who am I")
def me(ctx: RequestContext = Depends(get_authenticated_ctx)) -> MePublic:
    principal = ctx.principal
    assert principal is not None
    return MePublic(
        id=principal.id,
        username=principal.username,
        roles=sorted(role.value for role in principal.roles),
        permissions=sorted(p.value for p in principal.permissions),
        method=principal.method,
        password_change_required=principal.password_change_required,
    )


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change my password")
def change_password(
    body: PasswordChange,
    ctx: RequestContext = Depends(get_authenticated_ctx),
    container: Container = Depends(get_container),
) -> None:
    container.accounts.change_own_password(ctx, body.current_password, body.new_password)


@router.post(
    "/register",
    response_model=UserCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create an account (admin)",
)
def register(
    body: UserCreate, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> UserCreated:
    created = container.accounts.create(ctx, body.username, body.role.value, body.password)
    return UserCreated.model_validate(created.user).model_copy(
        update={"one_time_password": created.one_time_password}
    )
