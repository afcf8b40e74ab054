"""The auditor's view: filters, "who looked at this study", CSV export."""

from __future__ import annotations

import csv
import io
import re

import pytest

from irmsia.bootstrap import Container
from irmsia.db.auditlog import AuditFilter
from irmsia.portal.views import audit as audit_views
from tests.conftest import FakeClock
from tests.integration.portal.conftest import BrowserFactory, World
from tests.support import CLI_CTX

EXPORT_PAGE = 7  # small pages, so a few events make several of them


def _actions(html: str) -> list[str]:
    return re.findall(r'<td class="mono small">([a-z_.0-9]+)</td>', html)


def test_filters_by_user_action_resource_and_outcome(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("clinician")
    reader.get(f"/portal/studies/{world.study_id}")
    reader.get("/portal/admin")  # denied
    auditor = browser("auditor")
    reader_id = container.accounts.by_username("clinician1").id
    by_user = auditor.get(f"/portal/audit?actor={reader_id}")
    assert set(_actions(by_user.text)) == {"auth.login", "study.read", "access.denied"}
    # The world fixture read the study once as the CLI, the clinician once.
    by_action = auditor.get("/portal/audit?action=study.read")
    assert _actions(by_action.text) == ["study.read", "study.read"]
    by_resource = auditor.get(f"/portal/audit?resource={world.study_id}")
    assert _actions(by_resource.text) == ["study.read", "study.read"] and "clinician1" in by_resource.text
    denied = auditor.get("/portal/audit?outcome=denied")
    assert _actions(denied.text) == ["access.denied"]
    assert auditor.get("/portal/audit?outcome=maybe").status_code == 400


def test_date_range_is_inclusive_of_whole_days(
    browser: BrowserFactory, world: World, clock: FakeClock
) -> None:
    auditor = browser("auditor")
    today = clock().date().isoformat()
    assert "auth.login" in _actions(auditor.get(f"/portal/audit?date_from={today}&date_to={today}").text)
    assert _actions(auditor.get("/portal/audit?date_from=2020-01-01&date_to=2020-01-02").text) == []
    assert "No events match" in auditor.get("/portal/audit?date_to=2020-01-02").text


def test_who_looked_at_a_study_covers_its_images_and_nothing_else(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("clinician")
    reader.get(f"/portal/studies/{world.study_id}")
    reader.get(f"/portal/images/{world.image_ids[1]}/dicom")
    reader.get(f"/portal/studies/{world.older_study_id}")  # another study: not listed
    page = browser("auditor").get(f"/portal/audit/study-access?study={world.study_id}")
    assert page.status_code == 200
    actions = _actions(page.text)
    assert actions[:2] == ["image.download.dicom", "study.read"]
    assert set(actions) <= {"image.download.dicom", "study.read", "ingest.store"}
    assert world.older_study_id not in page.text.replace(f"study={world.older_study_id}", "")
    # Looking at the access log is audited, but not as a look at the study.
    reads = container.audit.search(CLI_CTX, AuditFilter(resource_id=world.study_id)).items
    assert [e.actor_name for e in reads if e.action == "audit.search"] == []


def test_study_access_without_an_id_goes_back_to_the_log(browser: BrowserFactory) -> None:
    response = browser("auditor").get("/portal/audit/study-access?study=")
    assert response.status_code == 303 and response.headers["location"] == "/portal/audit"


def test_csv_export_streams_every_matching_event(
    browser: BrowserFactory, world: World, container: Container, clock: FakeClock
) -> None:
    reader = browser("clinician")
    for _ in range(3):
        reader.get(f"/portal/studies/{world.study_id}")
    auditor = browser("auditor")
    clock.advance(seconds=1)  # the export covers what happened before it started
    response = auditor.get("/portal/audit/export.csv?action=study.read")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="irmsia-audit-\d{8}T\d{6}Z\.csv"', response.headers["content-disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["action"], r["actor_name"], r["resource_id"]) for r in rows][:3] == [
        ("study.read", "clinician1", world.study_id)
    ] * 3
    assert len(rows) == 4  # and the world fixture's own read


def test_csv_export_pages_through_long_logs(
    browser: BrowserFactory, container: Container, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_views, "EXPORT_PAGE", EXPORT_PAGE)
    for _ in range(EXPORT_PAGE + 20):
        container.audit.record_now(CLI_CTX, "test.event")
    auditor = browser("auditor")
    clock.advance(seconds=1)
    response = auditor.get("/portal/audit/export.csv?action=test.event")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == EXPORT_PAGE + 20


def test_csv_cells_cannot_become_spreadsheet_formulas(
    browser: BrowserFactory, container: Container, clock: FakeClock
) -> None:
    container.audit.record_now(CLI_CTX, "test.event", resource_type="user", resource_id='=HYPERLINK("x")')
    auditor = browser("auditor")
    clock.advance(seconds=1)
    response = auditor.get("/portal/audit/export.csv?action=test.event")
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert row["resource_id"] == '\'=HYPERLINK("x")'


def test_export_and_search_are_audited(browser: BrowserFactory, container: Container) -> None:
    auditor = browser("auditor")
    auditor.get("/portal/audit")
    auditor.get("/portal/audit/export.csv")
    searches = container.audit.search(CLI_CTX, AuditFilter(action="audit.search")).items
    assert [e.actor_name for e in searches][-2:] == ["auditor1", "auditor1"]


def test_csv_export_neither_repeats_nor_skips_while_the_log_grows(
    browser: BrowserFactory, container: Container, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_views, "EXPORT_PAGE", EXPORT_PAGE)
    for _ in range(2 * EXPORT_PAGE + 5):
        container.audit.record_now(CLI_CTX, "test.event")
    auditor = browser("auditor")
    clock.advance(seconds=1)
    before = container.audit.search(CLI_CTX, AuditFilter(), limit=1).total
    # No filter: every page read is audited and would match, were the range not closed at the start.
    response = auditor.get("/portal/audit/export.csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    ids = [row["id"] for row in rows]
    assert len(set(ids)) == len(ids) == before
    assert sum(row["action"] == "test.event" for row in rows) == 2 * EXPORT_PAGE + 5
