"""Errors on portal routes become pages (or JSON for the portal's own scripts).

``PortalRoute`` is the route class of every portal router: what a view or a dependency
raises is rendered here, with the status from the API's one table
(``irmsia.api.errors.status_for``). An anonymous visitor asking for a page is sent to the
login page; a caller who must change their password is sent to that page; a refusal is
audited as ``access.denied`` exactly as on the REST API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from irmsia import errors
from irmsia.api.errors import status_for
from irmsia.portal.pages import PAGE_HEADERS, render
from irmsia.portal.runtime import portal_of
from irmsia.usecases.audit import Outcome

log = logging.getLogger("irmsia.portal")

TITLES = {
    400: "The request could not be used",
    401: "Sign-in required",
    403: "Access denied",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported type",
    422: "Not acceptable",
    429: "Too many attempts",
    500: "Something went wrong",
    502: "A service did not answer",
    503: "Service unavailable",
    504: "A service timed out",
}

LOGIN_PATH = "/portal/login"
FORCED_CHANGE_PAGE = "/portal/password"


def wants_json(request: Request) -> bool:
    """The portal's scripts ask for JSON; browsers navigating ask for HTML."""
    return "application/json" in request.headers.get("accept", "")


# Fetch Metadata (Sec-Fetch-Dest) of the requests that show a page; anything else (an image,
# a script's fetch) that lost its session gets the error itself, not the sign-in page.
_PAGE_DESTINATIONS = frozenset({"document", "iframe", "frame"})


def _is_page_request(request: Request) -> bool:
    """A GET that shows a page: not a script asking for JSON, and not a subresource.

    A thumbnail still loading (lazily) after the session ended must not be redirected to the
    sign-in page: that load would set a new pre-login token cookie while the user fills in the
    form of another load, whose token then no longer matches. Browsers without Fetch Metadata
    send no ``Sec-Fetch-Dest`` and are treated as navigating.
    """
    if request.method != "GET" or wants_json(request):
        return False
    destination = request.headers.get("sec-fetch-dest")
    return destination is None or destination in _PAGE_DESTINATIONS


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?{urlencode({'next': target})}", status_code=303)


def error_page(request: Request, status: int, code: str, detail: str) -> Response:
    """The error as a page (or ``{"error", "detail", "request_id"}`` for scripts)."""
    if wants_json(request):
        body = {"error": code, "detail": detail, "request_id": getattr(request.state, "request_id", None)}
        return JSONResponse(body, status_code=status, headers=PAGE_HEADERS)
    context = {"title": TITLES.get(status, "Error"), "status": status, "code": code, "detail": detail}
    return render(request, "error.html", context, status=status)


def _audit_denied(request: Request) -> None:
    ctx = getattr(request.state, "ctx", None)
    if ctx is None:
        return
    route = request.scope.get("route")
    portal_of(request).container.audit.record_now(
        ctx,
        "access.denied",
        outcome=Outcome.DENIED,
        detail={"method": request.method, "route": getattr(route, "path", "?")},
    )


async def handle_error(request: Request, exc: errors.IrmsiaError) -> Response:
    """The response for an error raised by a portal view or dependency (see the module docstring)."""
    ctx = getattr(request.state, "ctx", None)
    principal = ctx.principal if ctx is not None else None
    if isinstance(exc, errors.AuthenticationFailed) and principal is None and _is_page_request(request):
        return _login_redirect(request)
    if (
        isinstance(exc, errors.PermissionDenied)
        and principal is not None
        and principal.password_change_required
    ):
        if _is_page_request(request):
            return RedirectResponse(FORCED_CHANGE_PAGE, status_code=303)
    elif isinstance(exc, errors.PermissionDenied):
        await run_in_threadpool(_audit_denied, request)
    status = status_for(exc)
    if status >= 500:
        log.error("portal request failed: %s (%s)", exc.code, type(exc).__name__)
    response = error_page(request, status, exc.code, exc.detail)
    if isinstance(exc, errors.TooManyAttempts):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _validation_detail(exc: RequestValidationError) -> str:
    # Field names only: never echo submitted values.
    fields = [str(p.get("loc", ("?",))[-1]) for p in exc.errors()[:5]]
    return "invalid value for " + ", ".join(fields) if fields else "invalid request"


class PortalRoute(APIRoute):
    """An APIRoute whose errors are rendered as portal pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def portal_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except errors.IrmsiaError as exc:
                return await handle_error(request, exc)
            except RequestValidationError as exc:
                return error_page(request, 400, "invalid_request", _validation_detail(exc))
            except HTTPException as exc:  # raised by the framework, e.g. for a malformed form body
                detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "error")
                return error_page(request, exc.status_code, "http_error", detail)
            except Exception as exc:  # noqa: BLE001  (the portal's HTTP edge: a page, never a trace)
                log.error("unhandled %s on portal %s %s", type(exc).__name__, request.method, self.path)
                return error_page(
                    request, 500, "internal_error", "internal error; quote the request id to an admin"
                )

        return portal_handler
