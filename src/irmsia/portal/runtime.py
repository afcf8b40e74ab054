"""The portal's per-app state: built once by ``install`` and kept in ``app.state.portal``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.templating import Jinja2Templates

from irmsia.bootstrap import Container
from irmsia.portal.sessions import PortalSessions
from irmsia.portal.study_access import StudyAccessLog


@dataclass
class Portal:
    """Everything the portal's views need besides the container's use cases.

    ``cookie_secure`` None means automatic: Secure when the request came over https or
    PUBLIC_URL is an https URL.
    """

    container: Container
    sessions: PortalSessions
    templates: Jinja2Templates
    study_access: StudyAccessLog
    cookie_secure: bool | None = None

    def secure_cookies(self, request: Request) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return request.url.scheme == "https" or self.container.settings.public_url.startswith("https://")


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal
