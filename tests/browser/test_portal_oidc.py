"""Single sign-on in a real headless Chromium: "Sign in with Keycloak", the provider's page, back signed in.

The provider is the loopback OpenID provider of ``tests.oidc_provider`` (its authorize page is
a small HTML form); the portal is a real uvicorn server whose PUBLIC_URL is its own loopback
address, so the redirect URI the provider checks is the one the browser comes back to. Both
use the real clock here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from irmsia.api.app import create_app
from irmsia.bootstrap import Container, build_container
from irmsia.clock import utc_now
from irmsia.db.auditlog import AuditFilter
from irmsia.portal.web import install
from tests.browser.conftest import MISSING, free_socket, needs_browser, screenshot, serving, watched_page
from tests.conftest import make_settings
from tests.oidc_provider import LoopbackProvider, User, running
from tests.support import CLI_CTX

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, needs_browser]

CLIENT_ID = "irmsia-portal"
CLIENT_SECRET = "browser-test-client-secret"
AUDIENCE = "api://irmsia"


@dataclass
class SSOServer:
    url: str
    provider: LoopbackProvider
    container: Container


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSOServer]:
    if MISSING is not None:
        pytest.skip(MISSING)
    data = tmp_path_factory.mktemp("portal-oidc")
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    provider = LoopbackProvider(
        clock=utc_now,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=f"{url}/portal/oidc/callback",
        audience=AUDIENCE,
        users={
            "rad": User(
                sub="kc-rad", username="dr.rad", id_claims={"realm_access": {"roles": ["Radiology"]}}
            ),
            "aud": User(
                sub="kc-aud", username="audrey", access_claims={"realm_access": {"roles": ["Audit"]}}
            ),
        },
    )
    with running(provider):
        settings = make_settings(
            data / "data",
            f"sqlite:///{(data / 'irmsia.db').as_posix()}",
            INGEST_EXECUTOR="inline",
            PUBLIC_URL=url,
            OIDC_ISSUER=provider.issuer,
            OIDC_AUDIENCE=AUDIENCE,
            OIDC_ROLE_CLAIM="realm_access.roles",
            OIDC_ROLE_MAP=json.dumps({"Radiology": "radiologist", "Audit": "auditor"}),
            OIDC_CLIENT_ID=CLIENT_ID,
            OIDC_CLIENT_SECRET=CLIENT_SECRET,
            OIDC_PROVIDER_NAME="Keycloak",
        )
        container = build_container(settings)
        app = create_app(container=container)
        install(app)
        try:
            with serving(app, sock) as served:
                assert served == url
                yield SSOServer(url=url, provider=provider, container=container)
        finally:
            container.close()


@pytest.fixture
def page(chromium: Browser, sso: SSOServer) -> Iterator[Page]:
    """A watched page (no cookies; script or console errors fail the test) on the SSO server."""
    with watched_page(chromium, sso.url) as opened:
        yield opened


def _at_provider(page: Page, sso: SSOServer) -> None:
    page.wait_for_url(lambda url: url.startswith(sso.provider.authorize_url + "?"))


def test_sign_in_with_the_provider_lands_signed_in_and_sign_out_ends_both_sessions(
    page: Page, sso: SSOServer
) -> None:
    page.goto("/portal/login")
    screenshot(page, "login-oidc")

    page.get_by_role("link", name="Sign in with Keycloak").click()
    _at_provider(page, sso)
    page.get_by_label("Account").select_option("rad")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{sso.url}/portal/worklist")

    links = page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts()
    assert links == ["Worklist", "Upload"]
    assert "dr.rad" in page.locator(".account").inner_text()
    assert page.get_by_role("link", name="Password").count() == 0  # the provider keeps the password
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert cookies["irmsia_session"]["httpOnly"] and "irmsia_oidc" not in cookies
    logins = sso.container.audit.search(CLI_CTX, AuditFilter(action="auth.login", actor_id="oidc:kc-rad"))
    assert [event.outcome for event in logins.items] == ["success"]

    page.get_by_role("button", name="Sign out").click()
    # The portal's page moves on to the provider's end-session endpoint, which sends the
    # browser back to the sign-in page.
    page.wait_for_url(f"{sso.url}/portal/login")
    assert sso.provider.logout_queries[-1]["client_id"] == CLIENT_ID
    page.goto("/portal/worklist")
    page.wait_for_url(lambda url: "/portal/login?next=" in url)


def test_a_deep_link_comes_back_after_sign_in(page: Page, sso: SSOServer) -> None:
    page.goto("/portal/audit")
    page.wait_for_url(lambda url: "/portal/login?next=" in url)

    page.get_by_role("link", name="Sign in with Keycloak").click()
    _at_provider(page, sso)
    page.get_by_label("Account").select_option("aud")
    page.get_by_role("button", name="Log in").click()

    page.wait_for_url(f"{sso.url}/portal/audit")
    assert page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts() == ["Audit"]


def test_cancelling_at_the_provider_shows_why_on_the_sign_in_page(page: Page, sso: SSOServer) -> None:
    page.goto("/portal/login")
    page.get_by_role("link", name="Sign in with Keycloak").click()
    _at_provider(page, sso)

    page.get_by_role("button", name="Cancel").click()

    page.wait_for_url(lambda url: "/portal/oidc/callback" in url)
    alert = page.get_by_role("alert")
    assert "did not sign you in (access_denied)" in alert.inner_text()
    assert page.get_by_role("link", name="Sign in with Keycloak").is_visible()  # try again from here
    screenshot(page, "login-oidc-cancelled")
