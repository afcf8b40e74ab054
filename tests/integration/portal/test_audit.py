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
from tests.factories import make_ct, to_bytes
from tests.integration.portal.conftest import BrowserFactory, World, ingest
from tests.support import CLI_CTX

EXPORT_PAGE = 7  # small pages, so a few events make several of them


def _actions(html: str) -> list[str]:
    return re.findall(r'<td class="mono small">([a-z_.0-9]+)</td>', html)


# The study page also reads the study's AI results and report to show them.
STUDY_PAGE_EXTRAS = {"ai.read", "report.read"}


def _reads(html: str) -> list[str]:
    """The actions listed, without the study page's reads of AI results and reports."""
    return [action for action in _actions(html) if action not in STUDY_PAGE_EXTRAS]


def test_filters_by_user_action_resource_and_outcome(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("clinician")
    reader.get(f"/portal/studies/{world.study_id}")
    reader.get("/portal/admin")  # denied
    auditor = browser("auditor")
    reader_id = container.accounts.by_username("clinician1").id
    by_user = auditor.get(f"/portal/audit?actor={reader_id}")
    assert set(_reads(by_user.text)) == {"auth.login", "study.read", "access.denied"}
    # The world fixture read the study once as the CLI, the clinician once.
    by_action = auditor.get("/portal/audit?action=study.read")
    assert _actions(by_action.text) == ["study.read", "study.read"]
    by_resource = auditor.get(f"/portal/audit?resource={world.study_id}")
    assert _reads(by_resource.text) == ["study.read", "study.read"] and "clinician1" in by_resource.text
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
    actions = _reads(page.text)
    assert actions[:2] == ["image.download.dicom", "study.read"]
    assert set(_actions(page.text)) <= {
        "image.download.dicom",
        "study.read",
        "ingest.store",
        *STUDY_PAGE_EXTRAS,
    }
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


# --- by user name and by patient --------------------------------------------------------


def test_filter_by_username_matches_the_accounts_records_by_its_id(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("clinician")
    reader.get(f"/portal/studies/{world.study_id}")
    browser("radiologist").get(f"/portal/studies/{world.study_id}")
    auditor = browser("auditor")
    reader_id = container.accounts.by_username("clinician1").id
    by_name = auditor.get("/portal/audit?username=Clinician1")  # names are case-insensitive
    assert by_name.status_code == 200
    assert _actions(by_name.text) == _actions(auditor.get(f"/portal/audit?actor={reader_id}").text)
    assert {"auth.login", "study.read"} <= set(_actions(by_name.text))
    assert "radiologist1" not in by_name.text
    assert 'value="Clinician1"' in by_name.text  # the form shows the filter again
    # Combined with an action, both must match.
    assert _actions(auditor.get("/portal/audit?username=clinician1&action=study.read").text) == ["study.read"]
    assert "No events match" in auditor.get("/portal/audit?username=nobody").text


def _other_patient(container: Container) -> dict[str, str]:
    [result] = ingest(container, to_bytes(make_ct(patient_id="OTHERPID02")))
    assert result["status"] == "stored"
    return result


def test_filter_by_patient_finds_its_studies_series_images_and_results(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    other = _other_patient(container)
    reader = browser("clinician")
    reader.get(f"/portal/studies/{world.study_id}")
    reader.get(f"/portal/studies/{world.older_study_id}")  # the same patient's other study
    reader.get(f"/portal/images/{world.image_ids[1]}/dicom")
    reader.get(f"/portal/studies/{other['study_id']}")  # another patient: not listed
    container.search.series(CLI_CTX, world.series_id)
    container.analyze.for_patient(CLI_CTX, world.pseudonym)
    container.retrieve.reidentify(CLI_CTX, "patient", world.pseudonym)
    auditor = browser("auditor")
    page = auditor.get(f"/portal/audit?patient={world.pseudonym}")
    assert page.status_code == 200
    found = _events(page.text)
    assert ("vault.read", "patient", world.pseudonym) in found
    assert ("ai.read", "patient", world.pseudonym) in found
    assert ("series.read", "series", world.series_id) in found
    assert ("image.download.dicom", "image", world.image_ids[1]) in found
    studies_read = {resource for action, _, resource in found if action == "study.read"}
    assert studies_read == {world.study_id, world.older_study_id}
    stored = {resource for action, _, resource in found if action == "ingest.store"}
    assert stored >= {*world.image_ids, _image_of(container, world.older_study_id)}
    for _, _, resource in found:
        assert resource not in (
            other["study_id"],
            other["series_id"],
            other["image_id"],
            other["patient_pseudonym"],
        )
    other_page = auditor.get(f"/portal/audit?patient={other['patient_pseudonym']}").text
    assert {r for _, _, r in _events(other_page)} == {other["study_id"], other["image_id"]}
    assert "No events match" in auditor.get("/portal/audit?patient=IRM-NOSUCHPATIENT").text


def _image_of(container: Container, study_id: str) -> str:
    study = container.search.study(CLI_CTX, study_id)
    return study.series[0].instances[0].id


def _events(html: str) -> list[tuple[str, str, str]]:
    """(action, resource type, resource id) of each row of the events table ("" when none)."""
    events = []
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        action = re.search(r'<td class="mono small">([a-z_.0-9]+)</td>', row)
        if action is None:
            continue
        resource = re.search(
            r'<td class="small">\s*(\w*)\s*<a class="mono short-id" href="[^"]*" title="([^":]+):', row
        )
        kind, key = resource.groups() if resource else ("", "")
        events.append((action.group(1), kind, key))
    return events


def test_filter_by_patient_covers_ai_results_and_reports(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    from tests.integration.portal.test_admin import _result

    container.analyze.store(CLI_CTX, world.image_ids[0], _result(1.0))
    container.reports.build(CLI_CTX, world.study_id)
    found = _events(browser("auditor").get(f"/portal/audit?patient={world.pseudonym}").text)
    assert ("ai.analyze", "image", world.image_ids[0]) in found
    assert ("report.read", "study", world.study_id) in found


def test_csv_export_honours_the_username_and_patient_filters(
    browser: BrowserFactory, world: World, container: Container, clock: FakeClock
) -> None:
    other = _other_patient(container)
    reader = browser("clinician")
    reader.get(f"/portal/studies/{world.study_id}")
    reader.get(f"/portal/studies/{other['study_id']}")
    browser("radiologist").get(f"/portal/studies/{world.study_id}")
    auditor = browser("auditor")
    clock.advance(seconds=1)
    response = auditor.get(
        f"/portal/audit/export.csv?username=clinician1&patient={world.pseudonym}&action=study.read"
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["action"], r["actor_name"], r["resource_id"]) for r in rows] == [
        ("study.read", "clinician1", world.study_id)
    ]
    assert rows[0]["actor_id"] == container.accounts.by_username("clinician1").id


def test_the_page_offers_the_recorded_actions_and_links_the_export_to_the_filters(
    browser: BrowserFactory, world: World
) -> None:
    page = browser("auditor").get(f"/portal/audit?username=clinician1&patient={world.pseudonym}").text
    offered = set(re.findall(r'<option value="([a-z_.0-9]+)">', page))
    assert {"job.retry", "job.discard", "ai.analyze", "ai.read", "report.read", "report.confirmed"} <= offered
    assert {"ledger.read", "ledger.verify", "ledger.anchor", "access.denied"} <= offered
    export = re.search(r'href="(/portal/audit/export\.csv[^"]*)"', page)
    assert export is not None
    assert "username=clinician1" in export.group(1) and f"patient={world.pseudonym}" in export.group(1)
    assert f'value="{world.pseudonym}"' in page


def test_searches_by_user_and_patient_are_audited_with_their_filters(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    browser("auditor").get(f"/portal/audit?username=clinician1&patient={world.pseudonym}")
    [search] = container.audit.search(CLI_CTX, AuditFilter(action="audit.search", username="auditor1")).items
    detail = search.as_dict()["detail"]
    assert detail["username"] == "clinician1" and detail["patient"] == world.pseudonym
