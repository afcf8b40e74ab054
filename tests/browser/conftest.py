"""Browser tests: a real uvicorn server on 127.0.0.1 and Debian's Chromium driven by Playwright.

Skipped, with the reason, when /usr/bin/chromium or the playwright package is missing
(``./scripts/test`` installs both). One server per module: an app with the portal, inline
ingest, SQLite in a temporary directory, one account per role and a seeded patient with two
studies (a three-slice CT phantom and an older CR). Each test gets a fresh browser context,
so cookies never leak between tests.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from pydicom.uid import generate_uid

from irmsia.api.app import create_app
from irmsia.bootstrap import Container, build_container
from irmsia.portal.web import install
from irmsia.usecases.ingest import IncomingFile
from tests.browser.phantom import phantom_ct
from tests.conftest import TEST_PASSWORD, make_settings
from tests.factories import make_cr, to_bytes
from tests.support import CLI_CTX

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROLES = ("admin", "radiologist", "clinician", "uploader", "auditor")
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
SEED_PATIENT = "BROWSERSEED01"
SEED_SLICES = 3
TIMEOUT_MS = 10_000


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return "Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright; never `playwright install`)"
    return None


MISSING = _missing()
needs_browser = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@dataclass
class LiveServer:
    """The running server and what the fixture seeded."""

    url: str
    container: Container
    study_id: str = ""
    older_study_id: str = ""
    series_id: str = ""
    image_ids: list[str] = field(default_factory=list)
    pseudonym: str = ""
    study_date: str = ""


def _seed(container: Container) -> dict[str, Any]:
    study_uid, series_uid = generate_uid(), generate_uid()
    blobs = [
        to_bytes(
            phantom_ct(
                patient_id=SEED_PATIENT,
                study_uid=study_uid,
                series_uid=series_uid,
                index=i,
                slices=SEED_SLICES,
            )
        )
        for i in range(SEED_SLICES)
    ]
    cr = make_cr()
    cr.PatientID = SEED_PATIENT
    cr.StudyDate = "20230105"
    cr.StudyDescription = "CHEST PA"
    batch = container.ingest.submit(
        CLI_CTX, [IncomingFile(data=[blob], label=str(i)) for i, blob in enumerate([*blobs, to_bytes(cr)], 1)]
    )
    results = [item.result for item in batch.files]
    assert all(r.get("status") == "stored" for r in results), [item.error for item in batch.files]
    study = container.search.study(CLI_CTX, results[0]["study_id"])
    return {
        "study_id": results[0]["study_id"],
        "older_study_id": results[-1]["study_id"],
        "series_id": results[0]["series_id"],
        "image_ids": [r["image_id"] for r in results[:SEED_SLICES]],
        "pseudonym": results[0]["patient_pseudonym"],
        "study_date": study.study_date.isoformat() if study.study_date else "",
    }


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if MISSING is not None:
        pytest.skip(MISSING)
    data = tmp_path_factory.mktemp("portal-browser")
    settings = make_settings(
        data / "data", f"sqlite:///{(data / 'irmsia.db').as_posix()}", INGEST_EXECUTOR="inline"
    )
    container = build_container(settings)
    app = create_app(container=container)
    install(app)
    for role in ROLES:
        container.accounts.create(CLI_CTX, f"{role}1", role, TEST_PASSWORD)
    seeded = _seed(container)
    sock = _free_socket()
    port = sock.getsockname()[1]
    # No websockets (not used; avoids importing the websockets library) and no lifespan:
    # the fixture owns the container.
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", ws="none", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", container=container, **seeded)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        container.close()


@pytest.fixture(scope="package")  # Playwright's loop ends with the browser tests, not the session
def chromium() -> Iterator[Browser]:
    if MISSING is not None:
        pytest.skip(MISSING)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def watched_page(chromium: Browser, base_url: str) -> Iterator[Page]:
    """A page in a fresh context (no cookies), laptop-sized, on ``base_url``.

    Fails the test on any script error or console error (a Content Security Policy violation
    shows up there); refused resources are expected in access tests and are not counted.
    """
    context = chromium.new_context(
        base_url=base_url, viewport={"width": 1366, "height": 860}, accept_downloads=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"console: {message.text}")

    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", on_console)
    try:
        yield page
    finally:
        context.close()
    assert problems == []


@pytest.fixture
def page(chromium: Browser, live: LiveServer) -> Iterator[Page]:
    """A watched page (see ``watched_page``) on the seeded server."""
    with watched_page(chromium, live.url) as opened:
        yield opened


def sign_in(page: Page, role: str) -> None:
    """Sign in through the login form as the seeded account of ``role``."""
    page.goto("/portal/login")
    page.get_by_label("Username").fill(f"{role}1")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/portal/login" not in url)


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot under test-artifacts/screenshots/ (a CI artefact, git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def free_socket() -> socket.socket:
    """A listening-ready socket bound to a free loopback port (bind first, so a URL can be known before the app)."""
    return _free_socket()


@contextmanager
def serving(app: Any, sock: socket.socket) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on ``sock`` until the block ends; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", ws="none", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
