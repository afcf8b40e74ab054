"""The admin dashboard: accounts, jobs, quarantine review, system and key status, metrics."""

from __future__ import annotations

import re

import pytest

from irmsia.bootstrap import Container
from irmsia.errors import NotFound
from tests.conftest import TEST_PASSWORD, FakeClock
from tests.factories import make_ct, to_bytes
from tests.integration.portal.conftest import BrowserFactory, World, ingest
from tests.support import CLI_CTX

FLASH = re.compile(r'<div class="flash flash-(\w+)" role="\w+">(.*?)</div>', re.S)


def _flashes(html: str) -> list[tuple[str, str]]:
    return [(kind, text.strip()) for kind, text in FLASH.findall(html)]


def test_dashboard_shows_status_keys_metrics_and_failures(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    ingest(container, b"not a DICOM file at all" * 10)
    page = browser("admin").get("/portal/admin")
    assert page.status_code == 200
    text = page.text
    assert "database" in text and "storage" in text
    assert container.keys.current_key_id() in text
    assert re.search(r"Ingested, last hour</dt><dd>4</dd>", text)
    assert re.search(r"Failed, last 24 h</dt><dd class=\"alert-number\">1</dd>", text)
    assert "not_dicom" in text  # the failed job and its PHI-free reason
    assert "<td>validate</td>" in text and "<td>index</td>" in text  # mean step timings
    assert re.search(r'<p class="big-number">1</p>', text)  # one image in quarantine


def test_creating_an_account_shows_the_one_time_password_once(
    browser: BrowserFactory, container: Container
) -> None:
    admin = browser("admin")
    response = admin.post("/portal/admin/users", {"username": "Dr.Who", "role": "radiologist"})
    assert response.status_code == 303 and response.headers["location"] == "/portal/admin/users"
    page = admin.get("/portal/admin/users")
    [(kind, message)] = _flashes(page.text)
    assert kind == "success" and "Created the radiologist account dr.who." in message
    password = re.search(r"One-time password: (\S+) —", message)
    assert password is not None
    assert _flashes(admin.get("/portal/admin/users").text) == []
    newcomer = browser()
    assert newcomer.login("dr.who", password.group(1)).status_code == 303
    assert newcomer.get("/portal/worklist").headers["location"] == "/portal/password"


def test_account_errors_are_shown_on_the_page(browser: BrowserFactory) -> None:
    admin = browser("admin")
    admin.post("/portal/admin/users", {"username": "x", "role": "clinician"})
    [(kind, message)] = _flashes(admin.get("/portal/admin/users").text)
    assert kind == "error" and message.startswith("Account not created: username must be")
    admin.post("/portal/admin/users", {"username": "admin1", "role": "clinician"})
    [(kind, message)] = _flashes(admin.get("/portal/admin/users").text)
    assert kind == "error" and "already exists" in message


def test_disable_enable_role_and_reset(browser: BrowserFactory, container: Container) -> None:
    admin = browser("admin")
    target = container.accounts.create(CLI_CTX, "target1", "clinician", TEST_PASSWORD).user.id
    admin.post(f"/portal/admin/users/{target}/disable")
    assert container.accounts.get(CLI_CTX, target).disabled
    admin.post(f"/portal/admin/users/{target}/enable")
    assert not container.accounts.get(CLI_CTX, target).disabled
    admin.post(f"/portal/admin/users/{target}/role", {"role": "auditor"})
    assert container.accounts.get(CLI_CTX, target).role == "auditor"
    admin.post(f"/portal/admin/users/{target}/reset-password")
    flashes = _flashes(admin.get("/portal/admin/users").text)
    assert [kind for kind, _ in flashes] == ["success"] * 4
    assert "New one-time password for target1" in flashes[-1][1]
    assert container.accounts.get(CLI_CTX, target).must_change_password


def test_the_last_admin_cannot_be_disabled(browser: BrowserFactory, container: Container) -> None:
    admin = browser("admin")
    own_id = container.accounts.by_username("admin1").id
    admin.post(f"/portal/admin/users/{own_id}/disable")
    [(kind, message)] = _flashes(admin.get("/portal/admin/users").text)
    assert kind == "error" and "last active admin" in message
    assert not container.accounts.get(CLI_CTX, own_id).disabled


def test_unknown_account_is_a_404_page(browser: BrowserFactory) -> None:
    response = browser("admin").post("/portal/admin/users/0123/disable")
    assert response.status_code == 404 and "Not found" in response.text


def test_jobs_page_filters_by_state_and_shows_failures(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    ingest(container, b"garbage" * 50)
    admin = browser("admin")
    failed = admin.get("/portal/admin/jobs?state=failed")
    assert "Showing 1\N{EN DASH}1 of 1 jobs" in failed.text and "not_dicom" in failed.text
    everything = admin.get("/portal/admin/jobs")
    assert "of 5 jobs" in everything.text
    assert admin.get("/portal/admin/jobs?state=exploded").status_code == 400


def test_quarantine_review_releases_or_deletes(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    admin = browser("admin")
    page = admin.get("/portal/admin/quarantine")
    assert f"/portal/images/{world.quarantined_id}/thumbnail" in page.text
    assert admin.get(f"/portal/images/{world.quarantined_id}/thumbnail").status_code == 200
    assert admin.post(f"/portal/admin/quarantine/{world.quarantined_id}/release").status_code == 303
    assert container.retrieve.image(CLI_CTX, world.quarantined_id).status == "stored"
    admin.post(f"/portal/admin/quarantine/{world.quarantined_id}/release")
    assert ("error", "the image is not in quarantine") in _flashes(admin.get("/portal/admin/quarantine").text)

    second = ingest(container, to_bytes(make_ct()))  # stored: used here as a stand-in image to delete
    admin.post(f"/portal/admin/quarantine/{second[0]['image_id']}/delete")
    with pytest.raises(NotFound):
        container.retrieve.image(CLI_CTX, second[0]["image_id"])


def test_metrics_count_only_the_last_hour(browser: BrowserFactory, world: World, clock: FakeClock) -> None:
    clock.advance(minutes=61)
    page = browser("admin").get("/portal/admin")
    assert re.search(r"Ingested, last hour</dt><dd>0</dd>", page.text)
