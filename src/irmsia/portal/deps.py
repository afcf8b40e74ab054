"""FastAPI dependencies of the portal: the caller from the session cookie, and CSRF checks.

Views never decide who may do what: ``page_ctx`` only says who is asking (anonymous when
there is no live session), and the use case the view calls authorises. Every state-changing
request carries the session's synchronizer token, in the form field ``csrf_token`` or, for
the upload endpoint whose body is a stream, in the ``X-CSRF-Token`` header; requests a
browser marks as coming from another origin are refused before that.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Depends, Request

from irmsia.bootstrap import Container
from irmsia.errors import AuthenticationFailed, PermissionDenied
from irmsia.portal.runtime import portal_of
from irmsia.portal.sessions import SESSION_COOKIE, PortalSession, tokens_match
from irmsia.usecases.context import RequestContext

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CSRF_FAILED = "the form has expired or did not come from this site; reload the page and try again"


def get_container(request: Request) -> Container:
    return portal_of(request).container


def anonymous_ctx(request: Request) -> RequestContext:
    return RequestContext(
        principal=None,
        client_ip=request.client.host if request.client else None,
        request_id=getattr(request.state, "request_id", None),
    )


def page_ctx(request: Request) -> RequestContext:
    """The caller behind the session cookie (anonymous without a live session)."""
    base = anonymous_ctx(request)
    resolved = portal_of(request).sessions.resolve(request.cookies.get(SESSION_COOKIE), base)
    ctx = RequestContext(principal=resolved.principal, client_ip=base.client_ip, request_id=base.request_id)
    request.state.ctx = ctx
    request.state.portal_session = resolved.session
    return ctx


async def current_session(request: Request, ctx: RequestContext = Depends(page_ctx)) -> PortalSession:
    """The caller's live session; anonymous callers are sent to the login page. ``async``: it
    only reads what ``page_ctx`` found, so it needs no worker thread."""
    session: PortalSession | None = request.state.portal_session
    if session is None or ctx.principal is None:
        raise AuthenticationFailed("sign in to continue")
    return session


def same_site(request: Request) -> bool:
    """False when the browser says the request came from another origin.

    Fetch Metadata (``Sec-Fetch-Site``) decides when the browser sends it. Otherwise the
    ``Origin`` header must name this host; it may be "null" because pages are served with
    ``Referrer-Policy: no-referrer``, and then the CSRF token alone decides.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def csrf_form(request: Request, session: PortalSession = Depends(current_session)) -> None:
    """Refuse a form post without the session's CSRF token (or sent from another site)."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not same_site(request) or not tokens_match(
        session.csrf_token, given if isinstance(given, str) else None
    ):
        raise PermissionDenied(CSRF_FAILED)


async def csrf_header(request: Request, session: PortalSession = Depends(current_session)) -> None:
    """Refuse a script request without the session's CSRF token header (or from another site)."""
    if not same_site(request) or not tokens_match(session.csrf_token, request.headers.get(CSRF_HEADER)):
        raise PermissionDenied(CSRF_FAILED)
