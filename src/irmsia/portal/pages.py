"""Templates and the one way views render a page.

``render`` adds what every page needs (the caller, the navigation, the session's CSRF token,
one-shot messages) and the headers every portal page carries: a strict Content Security
Policy (scripts and styles from the portal's own static files only, so injected markup
cannot run) and ``Cache-Control: no-store`` (pages show clinical data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from irmsia import __version__
from irmsia.portal.runtime import portal_of
from irmsia.portal.sessions import PortalSession
from irmsia.security.policy import Permission, Principal

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/portal/static"

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True)
class NavItem:
    label: str
    route: str
    prefix: str
    permission: Permission


# Which sections a caller is offered. Offering is not allowing: every page still goes
# through its use case, which decides.
NAV: tuple[NavItem, ...] = (
    NavItem("Worklist", "portal.worklist", "/portal/worklist", Permission.READ_IMAGES),
    NavItem("Upload", "portal.upload", "/portal/upload", Permission.UPLOAD_IMAGES),
    NavItem("Admin", "portal.admin", "/portal/admin", Permission.MANAGE_USERS),
    NavItem("Audit", "portal.audit", "/portal/audit", Permission.READ_AUDIT),
)


def nav_for(principal: Principal | None, path: str) -> list[dict[str, Any]]:
    if principal is None or principal.password_change_required:
        return []
    return [
        {"label": item.label, "route": item.route, "active": path.startswith(item.prefix)}
        for item in NAV
        if principal.can(item.permission)
    ]


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _day(value: date | None) -> str:
    return value.isoformat() if value else "—"


def _size(value: int | None) -> str:
    """A byte count for people: 0 B, 912 B, 4.2 KiB, 1.0 GiB."""
    if value is None:
        return "—"
    amount, unit = float(value), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            break
        amount /= 1024
    return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"


@jinja2.pass_context
def _url(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
    request: Request = context["request"]
    return str(request.app.url_path_for(name, **{k: str(v) for k, v in params.items()}))


@jinja2.pass_context
def _query_with(context: Mapping[str, Any], /, **changes: Any) -> str:
    """The current query string with some parameters replaced (None removes one)."""
    request: Request = context["request"]
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urlencode(params) if params else "?"


def _static(path: str) -> str:
    return f"{STATIC_PREFIX}/{path}?v={__version__}"


def build_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(url=_url, static=_static, query_with=_query_with, version=__version__)
    env.filters.update(when=_when, day=_day, size=_size)
    return Jinja2Templates(env=env)


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    csrf_token: str | None = None,
) -> Response:
    """Render ``template`` for the current caller (``request.state.ctx`` when a view resolved one)."""
    ctx = getattr(request.state, "ctx", None)
    principal: Principal | None = ctx.principal if ctx is not None else None
    session: PortalSession | None = getattr(request.state, "portal_session", None)
    full: dict[str, Any] = {
        "principal": principal,
        "nav": nav_for(principal, request.url.path),
        "csrf_token": csrf_token or (session.csrf_token if session else ""),
        "flashes": session.take_flashes() if session else [],
        "request_id": getattr(request.state, "request_id", None),
        "can": lambda permission: principal is not None and principal.can(Permission(permission)),
        "title": "",
        **(context or {}),
    }
    response = portal_of(request).templates.TemplateResponse(request, template, full, status_code=status)
    response.headers.update(PAGE_HEADERS)
    return response
