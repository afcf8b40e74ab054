"""Fixtures for portal tests: an app with the portal installed, inline ingest, and signed-in browsers.

A ``Browser`` is a TestClient with its own cookie jar that signs in through the login form,
so every test goes through the same session and CSRF machinery a real browser does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from irmsia.api.app import create_app
from irmsia.bootstrap import Container, build_container
from irmsia.config import Settings
from irmsia.portal.web import install
from irmsia.usecases.ingest import IncomingFile
from tests.conftest import TEST_PASSWORD, FakeClock, make_settings
from tests.factories import make_cr, make_ct, make_secondary_capture, to_bytes
from tests.support import CLI_CTX

ROLES = ("admin", "radiologist", "clinician", "uploader", "auditor")
CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    # Quarantine instead of reject, so tests have images to review.
    return make_settings(tmp_path / "data", db_url, INGEST_EXECUTOR="inline", BURNED_IN_POLICY="quarantine")


@pytest.fixture
def container(settings: Settings, clock: FakeClock) -> Iterator[Container]:
    built = build_container(settings, clock=clock)
    yield built
    built.close()


@pytest.fixture
def app(container: Container) -> FastAPI:
    built = create_app(container=container)
    install(built)
    return built


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """An anonymous browser that does not follow redirects (and owns the app's lifespan)."""
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client:
        yield test_client


class Browser:
    """A cookie jar of its own, signed in through the portal's login form."""

    def __init__(self, app: FastAPI, base_url: str = "http://testserver") -> None:
        self.http = TestClient(app, raise_server_exceptions=False, follow_redirects=False, base_url=base_url)
        self._csrf: str | None = None

    def login(self, username: str, password: str = TEST_PASSWORD, *, next_path: str = "") -> httpx.Response:
        self._csrf = None
        form = self.http.get("/portal/login")
        token = csrf_of(form.text)
        return self.http.post(
            "/portal/login",
            data={"username": username, "password": password, "csrf_token": token, "next": next_path},
        )

    def csrf(self) -> str:
        """The session's CSRF token, as every page's forms carry it (fixed for the session)."""
        if self._csrf is None:
            self._csrf = csrf_of(self.http.get("/portal/password").text)
        return self._csrf

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """A form post with the session's CSRF token."""
        return self.http.post(path, data={"csrf_token": self.csrf(), **(data or {})}, **kwargs)

    def upload(self, *blobs: bytes, names: list[str] | None = None) -> httpx.Response:
        """One upload request (the page sends one per file), with the CSRF header."""
        files = [
            ("files", ((names or [])[i] if names else "upload", blob, "application/octet-stream"))
            for i, blob in enumerate(blobs)
        ]
        return self.http.post(
            "/portal/upload/file",
            files=files,
            headers={"X-CSRF-Token": self.csrf(), "Accept": "application/json"},
        )

    def close(self) -> None:
        self.http.close()


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


BrowserFactory = Callable[..., Browser]


@pytest.fixture
def browser(app: FastAPI, container: Container) -> Iterator[BrowserFactory]:
    """``browser("clinician")``: a new account of that role (``clinician1``), signed in."""
    opened: list[Browser] = []
    created: set[str] = set()

    def open_browser(role: str | None = None, *, username: str | None = None) -> Browser:
        new = Browser(app)
        opened.append(new)
        if role is not None:
            name = username or f"{role}1"
            if name not in created:
                container.accounts.create(CLI_CTX, name, role, TEST_PASSWORD)
                created.add(name)
            response = new.login(name)
            assert response.status_code == 303, response.text
        return new

    yield open_browser
    for item in opened:
        item.close()


@dataclass
class World:
    """What the ingest fixture stored: a two-slice CT study, an older CR study, a quarantined image."""

    study_id: str
    older_study_id: str
    series_id: str
    image_ids: list[str]
    pseudonym: str
    quarantined_id: str
    study_date: str


def ingest(container: Container, *blobs: bytes) -> list[dict[str, Any]]:
    batch = container.ingest.submit(
        CLI_CTX, [IncomingFile(data=[b], label=str(i)) for i, b in enumerate(blobs, 1)]
    )
    return [item.result for item in batch.files]


@pytest.fixture
def world(container: Container) -> World:
    study_uid, series_uid = generate_uid(), generate_uid()
    slices = []
    for index in range(2):
        ds = make_ct(patient_id="PORTALPID01", study_uid=study_uid, series_uid=series_uid, seed=index)
        ds.InstanceNumber = index + 1
        slices.append(to_bytes(ds))
    older = make_cr()
    older.PatientID = "PORTALPID01"
    older.StudyDate = "20230105"
    results = ingest(container, *slices, to_bytes(older), to_bytes(make_secondary_capture()))
    assert [r["status"] for r in results] == ["stored", "stored", "stored", "quarantined"]
    study = container.search.study(CLI_CTX, results[0]["study_id"])
    return World(
        study_id=results[0]["study_id"],
        older_study_id=results[2]["study_id"],
        series_id=results[0]["series_id"],
        image_ids=[results[0]["image_id"], results[1]["image_id"]],
        pseudonym=results[0]["patient_pseudonym"],
        quarantined_id=results[3]["image_id"],
        study_date=study.study_date.isoformat() if study.study_date else "",
    )
