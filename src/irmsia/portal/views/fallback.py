"""Unknown portal paths: a 404 page instead of the API's JSON."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from irmsia.errors import NotFound
from irmsia.portal.deps import page_ctx
from irmsia.portal.error_pages import PortalRoute
from irmsia.usecases.context import RequestContext

router = APIRouter(route_class=PortalRoute, include_in_schema=False)


@router.get("/portal/{rest:path}", name="portal.not_found")
def not_found(rest: str, ctx: RequestContext = Depends(page_ctx)) -> None:
    # The session is resolved first so the page shows the caller's navigation.
    raise NotFound("there is no such page")
