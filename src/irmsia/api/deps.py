"""FastAPI dependencies: the container and the caller's ``RequestContext``."""

from __future__ import annotations

from fastapi import Request

from irmsia.bootstrap import Container
from irmsia.errors import AuthenticationFailed
from irmsia.security.policy import Principal
from irmsia.usecases.context import RequestContext


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_container(request: Request) -> Container:
    """The container, as a dependency. ``async`` because it never blocks: FastAPI runs a plain
    ``def`` dependency on a worker thread, one thread hand-off per request for a field read."""
    return container_of(request)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("expected 'Authorization: Bearer <token>'")
    return token.strip()


def get_ctx(request: Request) -> RequestContext:
    """The caller (anonymous when no token is sent); a bad token is refused at once."""
    token = _bearer(request)
    principal: Principal | None = None
    if token is not None:
        principal = container_of(request).auth.principal_for(token)
    ctx = RequestContext(
        principal=principal,
        client_ip=request.client.host if request.client else None,
        request_id=getattr(request.state, "request_id", None),
    )
    request.state.ctx = ctx
    return ctx


def get_authenticated_ctx(request: Request) -> RequestContext:
    """Like ``get_ctx`` but refuses anonymous callers."""
    ctx = get_ctx(request)
    if ctx.principal is None:
        raise AuthenticationFailed("authentication required")
    return ctx
