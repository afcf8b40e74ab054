"""Install the web portal into an IRMSIA app: server-rendered pages under /portal.

``create_app`` calls ``install(app)`` once the container is in ``app.state.container``.
The portal calls the same use cases as the REST API with the caller taken from a session
cookie (see ``irmsia.portal.sessions``), so authorisation and audit cannot drift between
the two front doors.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from irmsia.bootstrap import Container
from irmsia.config import Settings
from irmsia.portal.pages import STATIC_DIR, STATIC_PREFIX, build_templates
from irmsia.portal.runtime import Portal
from irmsia.portal.sessions import CookieSigner, PortalSessions, SessionPolicy, SessionStore
from irmsia.portal.study_access import StudyAccessLog
from irmsia.portal.views import admin, audit, auth, fallback, studies, upload, worklist

# Included in this order; FALLBACK last, after the static files, as it answers every other GET under /portal.
ROUTERS = (auth.router, upload.router, worklist.router, studies.router, admin.router, audit.router)
FALLBACK = fallback.router


def build_portal(
    container: Container, *, cookie_secure: bool | None = None, policy: SessionPolicy | None = None
) -> Portal:
    """The portal's state for one app: session store, templates and the portal's use cases."""
    policy = policy or SessionPolicy()
    sessions = PortalSessions(
        auth=container.auth,
        store=SessionStore(container.clock, policy),
        signer=CookieSigner(container.settings.secret("SECRET_KEY"), "session"),
        clock=container.clock,
        policy=policy,
        federation=container.oidc_login,
    )
    return Portal(
        container=container,
        sessions=sessions,
        templates=build_templates(),
        study_access=StudyAccessLog(sessions=container.sessions, audit=container.audit),
        cookie_secure=cookie_secure,
    )


def options_from(settings: Settings) -> tuple[bool | None, SessionPolicy]:
    """Cookie and session options from the PORTAL_* settings, defaults where they are not defined.

    PORTAL_COOKIE_SECURE: auto (Secure over https or with an https PUBLIC_URL), always, never.
    PORTAL_SESSION_IDLE_MINUTES and PORTAL_SESSION_MAX_HOURS: session lifetimes.
    """
    secure = {"always": True, "never": False}.get(str(getattr(settings, "PORTAL_COOKIE_SECURE", "auto")))
    defaults = SessionPolicy()
    idle = getattr(settings, "PORTAL_SESSION_IDLE_MINUTES", None)
    lifetime = getattr(settings, "PORTAL_SESSION_MAX_HOURS", None)
    policy = SessionPolicy(
        idle=timedelta(minutes=int(idle)) if idle else defaults.idle,
        lifetime=timedelta(hours=int(lifetime)) if lifetime else defaults.lifetime,
    )
    return secure, policy


def install(app: FastAPI, *, cookie_secure: bool | None = None, policy: SessionPolicy | None = None) -> None:
    """Add the portal's routes and static files to ``app``; a second call does nothing.

    Options come from the settings (``options_from``); ``cookie_secure`` (True or False) and
    ``policy`` given here take precedence.
    """
    if getattr(app.state, "portal", None) is not None:
        return
    container: Container = app.state.container
    configured_secure, configured_policy = options_from(container.settings)
    app.state.portal = build_portal(
        container,
        cookie_secure=configured_secure if cookie_secure is None else cookie_secure,
        policy=policy or configured_policy,
    )
    for router in ROUTERS:
        app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="portal-static")
    app.include_router(FALLBACK)
