"""Every portal page and action, for every role and for anonymous visitors.

Allowed callers get the page (200) or the action's redirect (303). Authenticated callers
without the permission get the 403 page (HTML, not JSON). Anonymous visitors asking for a
page are sent to the login page; anonymous posts get 401. ``MATRIX`` must list every portal
route: ``test_matrix_covers_every_portal_route`` fails when one is added without a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from irmsia.bootstrap import Container
from irmsia.db.auditlog import AuditFilter
from irmsia.db.jobs import Job
from irmsia.portal.web import FALLBACK, ROUTERS
from tests.conftest import TEST_PASSWORD
from tests.factories import make_ct, to_bytes
from tests.integration.portal.conftest import ROLES, Browser, BrowserFactory, World
from tests.support import CLI_CTX

ANON = "anonymous"
READERS = frozenset({"admin", "radiologist", "clinician"})
UPLOADERS = frozenset({"admin", "radiologist", "uploader"})
ADMIN = frozenset({"admin"})
AUDITORS = frozenset({"admin", "auditor"})
SIGNERS = frozenset({"admin", "radiologist"})
AUTHENTICATED = frozenset(ROLES)
EVERYONE = frozenset({*ROLES, ANON})


@dataclass(frozen=True)
class Entry:
    method: str
    route: str  # the route template, as registered
    allowed: frozenset[str]
    path: str = ""  # concrete path (``{name}`` filled from the world); default: the route
    data: dict[str, str] = field(default_factory=dict)
    ok: tuple[int, ...] = (200,)
    anonymous: tuple[int, ...] = (303,)
    prepare: Callable[[Container, World], object] | None = None  # runs once before the requests

    def url(self, world: World, ids: dict[str, str]) -> str:
        values = {**world.__dict__, **ids, "image_id": world.image_ids[0]}
        return (self.path or self.route).format(**values)


MATRIX: list[Entry] = [
    Entry("GET", "/", EVERYONE, ok=(307,), anonymous=(307,)),
    Entry("GET", "/portal/", EVERYONE, ok=(303,)),
    Entry("GET", "/portal/login", EVERYONE, ok=(303,), anonymous=(200,)),
    Entry("POST", "/portal/login", EVERYONE, ok=(303,), anonymous=(303,)),
    Entry("POST", "/portal/logout", AUTHENTICATED, ok=(303,), anonymous=(401,)),
    # This app has no OIDC_CLIENT_ID: single sign-on is off, for everyone. With a provider, the
    # routes and the pages behind them are covered per role in test_oidc_login.py.
    Entry("GET", "/portal/oidc/login", EVERYONE, ok=(404,), anonymous=(404,)),
    Entry("GET", "/portal/oidc/callback", EVERYONE, ok=(404,), anonymous=(404,)),
    Entry("GET", "/portal/password", AUTHENTICATED),
    Entry(
        "POST",
        "/portal/password",
        AUTHENTICATED,
        data={
            "current_password": TEST_PASSWORD,
            "new_password": "a new long passphrase",
            "confirm_password": "a new long passphrase",
        },
        ok=(303,),
        anonymous=(401,),
    ),
    Entry("GET", "/portal/upload", UPLOADERS),
    Entry("POST", "/portal/upload/file", UPLOADERS, anonymous=(401,)),
    Entry("GET", "/portal/worklist", READERS),
    Entry("GET", "/portal/patients/{pseudonym}", READERS),
    Entry("GET", "/portal/studies/{study_id}", READERS),
    Entry("GET", "/portal/series/{series_id}", READERS),
    Entry("GET", "/portal/images/{image_id}/thumbnail", READERS),
    Entry(
        "GET", "/portal/images/{image_id}/frames/{frame}", READERS, path="/portal/images/{image_id}/frames/0"
    ),
    Entry(
        "GET",
        "/portal/images/{image_id}/frames/{frame}/render",
        READERS,
        path="/portal/images/{image_id}/frames/0/render?center=-600&width=1500",
    ),
    Entry("GET", "/portal/images/{image_id}/dicom", READERS),
    Entry("POST", "/portal/studies/{study_id}/analyze", READERS, ok=(303,), anonymous=(401,)),
    Entry(
        "GET",
        "/portal/studies/{study_id}/report/{fmt}",
        READERS,
        path="/portal/studies/{study_id}/report/pdf",
        prepare=lambda container, world: container.analyze.analyze(CLI_CTX, world.image_ids[0]),
    ),
    # Signed by the first allowed caller; the next one's 409 comes back as a message (303).
    Entry(
        "POST",
        "/portal/studies/{study_id}/sign",
        SIGNERS,
        data={"decision": "confirm"},
        ok=(303,),
        anonymous=(401,),
        prepare=lambda container, world: container.analyze.analyze(CLI_CTX, world.image_ids[0]),
    ),
    Entry("GET", "/portal/admin", ADMIN),
    Entry("GET", "/portal/admin/users", ADMIN),
    Entry(
        "POST",
        "/portal/admin/users",
        ADMIN,
        data={"username": "newuser", "role": "clinician"},
        ok=(303,),
        anonymous=(401,),
    ),
    Entry("POST", "/portal/admin/users/{user_id}/disable", ADMIN, ok=(303,), anonymous=(401,)),
    Entry("POST", "/portal/admin/users/{user_id}/enable", ADMIN, ok=(303,), anonymous=(401,)),
    Entry(
        "POST",
        "/portal/admin/users/{user_id}/role",
        ADMIN,
        data={"role": "radiologist"},
        ok=(303,),
        anonymous=(401,),
    ),
    Entry("POST", "/portal/admin/users/{user_id}/reset-password", ADMIN, ok=(303,), anonymous=(401,)),
    Entry("GET", "/portal/admin/jobs", ADMIN),
    # The job succeeded: an admin's retry or discard is refused with a message (and a redirect).
    Entry("POST", "/portal/admin/jobs/{job_id}/retry", ADMIN, ok=(303,), anonymous=(401,)),
    Entry("POST", "/portal/admin/jobs/{job_id}/discard", ADMIN, ok=(303,), anonymous=(401,)),
    Entry("GET", "/portal/admin/quarantine", ADMIN),
    Entry(
        "POST",
        "/portal/admin/quarantine/{image_id}/release",
        ADMIN,
        path="/portal/admin/quarantine/{quarantined_id}/release",
        ok=(303,),
        anonymous=(401,),
    ),
    Entry(
        "POST",
        "/portal/admin/quarantine/{image_id}/delete",
        ADMIN,
        path="/portal/admin/quarantine/{quarantined_id}/delete",
        ok=(303,),
        anonymous=(401,),
    ),
    Entry("GET", "/portal/audit", AUDITORS),
    Entry("GET", "/portal/audit/export.csv", AUDITORS),
    Entry("GET", "/portal/audit/study-access", AUDITORS, path="/portal/audit/study-access?study={study_id}"),
    Entry("GET", "/portal/{rest:path}", EVERYONE, path="/portal/no-such-page", ok=(404,), anonymous=(404,)),
]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the matrix checks the policy, not the SQL (the other portal tests run on both)."""
    return f"sqlite:///{(tmp_path / 'irmsia.db').as_posix()}"


def _portal_routes() -> set[tuple[str, str]]:
    routes = set()
    for router in (*ROUTERS, FALLBACK):
        for route in router.routes:
            for method in (getattr(route, "methods", None) or set()) - {"HEAD", "OPTIONS"}:
                routes.add((method, getattr(route, "path", "")))
    return routes


def test_matrix_covers_every_portal_route() -> None:
    listed = {(entry.method, entry.route) for entry in MATRIX}
    exposed = _portal_routes()
    assert exposed - listed == set(), "new portal routes need a row in MATRIX"
    assert listed - exposed == set(), "MATRIX lists routes the portal no longer has"


def test_portal_routes_stay_out_of_the_api_schema(app: FastAPI) -> None:
    assert not [path for path in app.openapi()["paths"] if path == "/" or path.startswith("/portal")]


def _request(who: str, entry: Entry, browser: Browser, world: World, ids: dict[str, str]) -> int:
    url = entry.url(world, ids)
    if entry.method == "GET":
        return browser.get(url).status_code
    if entry.route == "/portal/upload/file":
        if who == ANON:
            return browser.http.post(
                url, files=[("files", ("upload", b"x", "application/dicom"))]
            ).status_code
        return browser.upload(to_bytes(make_ct())).status_code
    if who == ANON:
        return browser.http.post(url, data=entry.data).status_code
    return browser.post(url, entry.data).status_code


@pytest.mark.parametrize("entry", MATRIX, ids=lambda e: f"{e.method} {e.route}")
def test_every_role_gets_exactly_what_the_policy_allows(
    entry: Entry, browser: BrowserFactory, world: World, container: Container, app: FastAPI
) -> None:
    browsers = {role: browser(role) for role in ROLES}
    browsers[ANON] = browser()
    target = container.accounts.create(CLI_CTX, "target1", "clinician", TEST_PASSWORD).user.id
    with container.sessions() as session:
        job_id = session.scalars(select(Job.id).limit(1)).one()
    ids = {"user_id": target, "job_id": job_id}
    if entry.prepare is not None:
        entry.prepare(container, world)
    for who in (ANON, *ROLES):
        if entry.route == "/portal/login" and entry.method == "POST":
            # Signing in happens from a fresh browser: the form's nonce comes with the login page.
            status = browser().login(f"{who}1" if who != ANON else "admin1").status_code
        else:
            status = _request(who, entry, browsers[who], world, ids)
        if who == ANON:
            assert status in entry.anonymous, f"{who}: {entry.method} {entry.route} gave {status}"
        elif who in entry.allowed:
            assert status in entry.ok, f"{who}: {entry.method} {entry.route} gave {status}"
        else:
            assert status == 403, f"{who}: {entry.method} {entry.route} gave {status}, expected 403"


def test_refusals_are_html_pages_and_audited(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    clinician = browser("clinician")
    response = clinician.get("/portal/admin")
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "Access denied" in response.text
    denied = container.audit.search(CLI_CTX, AuditFilter(action="access.denied"))
    assert [(e.actor_name, e.outcome) for e in denied.items] == [("clinician1", "denied")]
    assert '"route": "/portal/admin"' in denied.items[0].detail


def test_anonymous_visitors_are_sent_to_login_and_come_back(
    client: TestClient, browser: BrowserFactory, world: World
) -> None:
    response = client.get(f"/portal/studies/{world.study_id}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/portal/login?next=%2Fportal%2Fstudies%2F{world.study_id}"
    reader = browser()
    reader_account = browser("clinician")  # creates clinician1
    reader_account.close()
    login = reader.login("clinician1", next_path=f"/portal/studies/{world.study_id}")
    assert login.status_code == 303
    assert login.headers["location"] == f"/portal/studies/{world.study_id}"
