"""Sign in (password or OIDC), sign out, the forced password change, and the landing redirect.

The OIDC routes only parse and redirect: ``OIDCLogin`` (``irmsia.usecases.oidc_login``)
holds the protocol, the checks and the audit records. The browser keeps a random value in a
pre-login cookie (path /portal/oidc, ``SameSite=Lax`` so that it comes back with the
provider's top-level redirect) to which the server bound the sign-in's state.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from irmsia.api.errors import status_for
from irmsia.errors import (
    AuthenticationFailed,
    AuthError,
    ExternalServiceError,
    InputError,
    InvalidRequest,
    NotFound,
    TooManyAttempts,
)
from irmsia.portal.deps import anonymous_ctx, csrf_form, current_session, page_ctx, same_site
from irmsia.portal.error_pages import PortalRoute
from irmsia.portal.forms import safe_next
from irmsia.portal.pages import NAV, render
from irmsia.portal.runtime import portal_of
from irmsia.portal.sessions import LOGIN_COOKIE, SESSION_COOKIE, PortalSession, new_nonce, tokens_match
from irmsia.usecases.context import RequestContext
from irmsia.usecases.oidc_login import OIDCLogin

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

HOME = "/portal/"
COOKIE_PATH = "/portal"
LOGIN_COOKIE_MAX_AGE = 3600
_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")  # what new_nonce() makes
SHORT_FIELD = 256
PASSWORD_FIELD = 1024
OIDC_COOKIE = "irmsia_oidc"  # binds a started OIDC sign-in to this browser
OIDC_COOKIE_PATH = "/portal/oidc"


@router.get("/", name="portal.root")
def root() -> Response:
    return RedirectResponse(HOME, status_code=307)


@router.get("/portal/", name="portal.home")
def home(request: Request, ctx: RequestContext = Depends(page_ctx)) -> Response:
    """Send the caller to the first section their role offers (or to the login page)."""
    principal = ctx.principal
    if principal is None:
        return RedirectResponse("/portal/login", status_code=303)
    if principal.password_change_required:
        return RedirectResponse("/portal/password", status_code=303)
    for item in NAV:
        if principal.can(item.permission):
            return RedirectResponse(request.app.url_path_for(item.route), status_code=303)
    return render(request, "home.html", {"title": "Welcome"})


def _login_form(
    request: Request,
    *,
    next_path: str,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
    end_session_url: str | None = None,
) -> Response:
    # Keep the browser's pre-login token while it lasts: a second load of the sign-in page
    # (another tab, or a stale image request redirected here) must not expire a form already
    # on screen. The token is random, HttpOnly and SameSite=Strict, so a site cannot plant it.
    kept = request.cookies.get(LOGIN_COOKIE)
    nonce = kept if kept is not None and _NONCE.fullmatch(kept) else new_nonce()
    flow = portal_of(request).container.oidc_login
    response = render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "next": next_path,
            "error": error,
            "notice": notice,
            "oidc_provider": flow.provider_name if flow is not None else None,
            "end_session_url": end_session_url,
        },
        status=status,
        csrf_token=nonce,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_COOKIE_MAX_AGE,
        path="/portal/login",
        httponly=True,
        samesite="strict",
        secure=portal_of(request).secure_cookies(request),
    )
    return response


@router.get("/portal/login", name="portal.login")
def login_page(
    request: Request,
    next_path: Annotated[str | None, Query(alias="next", max_length=2048)] = None,
    signed_out: str | None = None,
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    if ctx.principal is not None:
        return RedirectResponse(safe_next(next_path, HOME), status_code=303)
    notice = "You have signed out." if signed_out else None
    return _login_form(request, next_path=safe_next(next_path, ""), notice=notice)


@router.post("/portal/login", name="portal.login_submit")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=SHORT_FIELD)] = "",
    password: Annotated[str, Form(max_length=PASSWORD_FIELD)] = "",
    csrf_token: Annotated[str, Form(max_length=SHORT_FIELD)] = "",
    requested_next: Annotated[str, Form(alias="next", max_length=2048)] = "",
) -> Response:
    """Check the password through the Authenticator (throttled, audited) and open a session."""
    next_path = safe_next(requested_next, "")
    if not same_site(request) or not tokens_match(request.cookies.get(LOGIN_COOKIE), csrf_token):
        return _login_form(
            request, next_path=next_path, error="The sign-in form expired. Please try again.", status=403
        )
    if not username.strip() or not password:
        return _login_form(
            request, next_path=next_path, error="Enter your username and password.", status=400
        )
    portal = portal_of(request)
    try:
        _, cookie = portal.sessions.login(anonymous_ctx(request), username, password)
    except AuthenticationFailed:
        return _login_form(request, next_path=next_path, error="Incorrect username or password.", status=401)
    except TooManyAttempts as exc:
        response = _login_form(
            request,
            next_path=next_path,
            error="Too many failed sign-ins. Wait a few minutes and try again.",
            status=429,
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    response = RedirectResponse(next_path or HOME, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=portal.secure_cookies(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/portal/login")
    return response


@router.post("/portal/logout", name="portal.logout", dependencies=[Depends(csrf_form)])
def logout(
    request: Request,
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    """Revoke the session's refresh tokens (audited) and clear the cookie.

    An OIDC session whose provider has an end-session endpoint gets a page that moves on
    there by itself: a redirect would be blocked, since the page's Content Security Policy
    (form-action 'self') also covers where a form post is redirected.
    """
    end_session = portal_of(request).sessions.logout(ctx, session)
    if end_session is None:
        response: Response = RedirectResponse("/portal/login?signed_out=1", status_code=303)
    else:
        request.state.ctx, request.state.portal_session = anonymous_ctx(request), None
        flow = portal_of(request).container.oidc_login
        name = flow.provider_name if flow is not None else "the identity provider"
        response = _login_form(
            request,
            next_path="",
            notice=f"You have signed out of IRMSIA. Signing you out of {name} too…",
            end_session_url=end_session,
        )
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- OIDC sign-in -------------------------------------------------------------------------
def _flow(request: Request) -> OIDCLogin:
    flow = portal_of(request).container.oidc_login
    if flow is None:
        raise NotFound("single sign-on is not configured")
    return flow


def _oidc_failed(
    request: Request, flow: OIDCLogin, exc: InputError | AuthError | ExternalServiceError
) -> Response:
    response = _login_form(
        request,
        next_path="",
        error=f"Sign-in with {flow.provider_name} failed: {exc.detail}.",
        status=status_for(exc),
    )
    response.delete_cookie(OIDC_COOKIE, path=OIDC_COOKIE_PATH)
    return response


@router.get("/portal/oidc/login", name="portal.oidc_login")
def oidc_login(
    request: Request,
    next_path: Annotated[str | None, Query(alias="next", max_length=2048)] = None,
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    """Send the browser to the provider's sign-in page (state, nonce and PKCE stay here)."""
    flow = _flow(request)
    if ctx.principal is not None:
        return RedirectResponse(safe_next(next_path, HOME), status_code=303)
    try:
        start = flow.begin(anonymous_ctx(request), safe_next(next_path, ""))
    except ExternalServiceError as exc:
        return _oidc_failed(request, flow, exc)
    response = RedirectResponse(start.redirect_url, status_code=303)
    response.set_cookie(
        OIDC_COOKIE,
        start.binding,
        max_age=int(flow.pending_ttl.total_seconds()),
        path=OIDC_COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=portal_of(request).secure_cookies(request),
    )
    return response


@router.get("/portal/oidc/callback", name="portal.oidc_callback")
def oidc_callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=SHORT_FIELD)] = None,
    error: Annotated[str | None, Query(max_length=SHORT_FIELD)] = None,
    issuer: Annotated[str | None, Query(alias="iss", max_length=2048)] = None,
) -> Response:
    """The provider's redirect back: finish the sign-in (checked and audited) and open a session.

    ``error_description`` is ignored: it is the provider's (or an attacker's) free text.
    """
    flow = _flow(request)
    portal = portal_of(request)
    try:
        login = flow.complete(
            anonymous_ctx(request),
            binding=request.cookies.get(OIDC_COOKIE),
            state=state,
            code=code,
            error=error,
            issuer=issuer,
        )
    except (InputError, AuthError, ExternalServiceError) as exc:
        return _oidc_failed(request, flow, exc)
    _, cookie = portal.sessions.open_federated(login.session)
    response = RedirectResponse(login.next_path or HOME, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=portal.secure_cookies(request),
    )
    response.delete_cookie(OIDC_COOKIE, path=OIDC_COOKIE_PATH)
    return response


def _password_form(
    request: Request, ctx: RequestContext, *, error: str | None = None, status: int = 200
) -> Response:
    if ctx.principal is not None and ctx.principal.method != "password":
        raise InvalidRequest("your password is managed by your identity provider; change it there")
    forced = bool(ctx.principal and ctx.principal.password_change_required)
    return render(
        request,
        "password.html",
        {"title": "Change password", "forced": forced, "error": error},
        status=status,
    )


@router.get("/portal/password", name="portal.password")
def password_page(
    request: Request,
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    return _password_form(request, ctx)


@router.post("/portal/password", name="portal.password_submit", dependencies=[Depends(csrf_form)])
def change_password(
    request: Request,
    current_password: Annotated[str, Form(max_length=PASSWORD_FIELD)] = "",
    new_password: Annotated[str, Form(max_length=PASSWORD_FIELD)] = "",
    confirm_password: Annotated[str, Form(max_length=PASSWORD_FIELD)] = "",
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    """Change the caller's own password (clears a forced change)."""
    if ctx.principal is not None and ctx.principal.method != "password":
        return _password_form(request, ctx)  # refuses: OIDC accounts have no password here
    if not current_password or not new_password:
        return _password_form(request, ctx, error="Fill in every field.", status=400)
    if new_password != confirm_password:
        return _password_form(request, ctx, error="The new passwords do not match.", status=400)
    try:
        portal_of(request).container.accounts.change_own_password(ctx, current_password, new_password)
    except AuthenticationFailed:
        # A wrong current password, not a lost session: stay on the form.
        return _password_form(request, ctx, error="The current password is incorrect.", status=400)
    except InvalidRequest as exc:
        return _password_form(request, ctx, error=exc.detail, status=400)
    session.flash("success", "Your password has been changed.")
    return RedirectResponse(HOME, status_code=303)
