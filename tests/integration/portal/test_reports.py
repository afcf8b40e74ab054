"""AI results and diagnostic reports in the portal: analyse, findings, downloads, sign-off, worklist."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from pypdf import PdfReader

from irmsia.ai.schema import AnalysisResult, Provenance
from irmsia.bootstrap import Container
from irmsia.config import Settings
from irmsia.db.auditlog import AuditFilter
from irmsia.errors import InvalidRequest
from irmsia.portal.views.studies import AIRow, finding_edits
from irmsia.reports.amend import FindingEdit
from irmsia.usecases.analyze import evenly_spaced
from tests.conftest import make_settings
from tests.factories import contains_phi
from tests.integration.portal.conftest import Browser, BrowserFactory, World
from tests.support import CLI_CTX

LOCATION_ID = re.compile(r"^/portal/(studies|series)/[0-9a-f]{32}(\?image=[0-9a-f]{32})?(#[a-z-]+)?$")
MOCK = {"AI_PROVIDER": "mock"}
PROVIDER_DOWN = {
    "AI_PROVIDER": "openai",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    "OPENAI_API_KEY": "sk-portal-canary",
    "AI_MAX_RETRIES": "0",
}


@pytest.fixture
def settings(tmp_path: Path, db_url: str, request: pytest.FixtureRequest) -> Settings:
    """The portal tests' settings; ``indirect`` parameters add AI settings."""
    overrides = getattr(request, "param", {})
    return make_settings(
        tmp_path / "data", db_url, INGEST_EXECUTOR="inline", BURNED_IN_POLICY="quarantine", **overrides
    )


def _flashes(html: str) -> list[str]:
    return [
        re.sub(r"\s+", " ", text).strip()
        for text in re.findall(r'class="flash[^"]*"[^>]*>(.*?)</div>', html, re.S)
    ]


def _follow(reader: Browser, response: object) -> str:
    location = response.headers["location"]  # type: ignore[attr-defined]
    assert LOCATION_ID.match(location), location
    return reader.get(location.split("#", 1)[0]).text


def _count(container: Container, action: str, resource_id: str | None = None) -> int:
    return container.audit.search(CLI_CTX, AuditFilter(action=action, resource_id=resource_id)).total


def _analyse(reader: Browser, world: World, **data: str) -> str:
    response = reader.post(f"/portal/studies/{world.study_id}/analyze", data)
    assert response.status_code == 303, response.text
    return _follow(reader, response)


def _viewer_data(html: str) -> dict:  # type: ignore[type-arg]
    found = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', html, re.S)
    assert found is not None
    return json.loads(found.group(1))


# --- analysis and the AI panel ------------------------------------------------------------------


def test_radiologist_analyses_the_study_and_sees_each_images_findings(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("radiologist")
    before = reader.get(f"/portal/studies/{world.study_id}").text
    assert "No image of this study has been analysed yet." in before
    assert "No report yet" in before
    page = _analyse(reader, world)
    assert _flashes(page) == ["Analysed 2 images. The results are AI-generated, not for clinical use."]
    assert "AI-generated, not for clinical use" in page
    assert "2 of 2 images analysed" in page
    assert page.count('class="ai-result"') == 2
    panel = page.split('id="ai-title"', 1)[1].split('id="report-title"', 1)[0]
    assert panel.index(world.image_ids[0]) < panel.index(world.image_ids[1])  # in instance order
    assert "AI: 2 of 2 images analysed" in page and "Report: preliminary" in page
    stored = container.analyze.latest_for_study(CLI_CTX, world.study_id)
    result = stored[0].result
    for finding in result.findings:
        assert finding.description in page
    assert f"Risk {result.risk_score}" in page
    assert result.suggested_diagnosis and result.suggested_diagnosis in page
    assert result.recommendations[0] in page
    assert "Provider <strong>builtin</strong>" in page and result.provenance.model in page
    assert "simulated" not in page.split('id="ai-title"', 1)[1].split('id="report-title"', 1)[0]
    assert _count(container, "ai.analyze") == 2
    assert _count(container, "ai.read", world.study_id) >= 1
    assert contains_phi(page) == []


@pytest.mark.parametrize("settings", [MOCK], indirect=True)
def test_mock_results_carry_the_simulated_badge(browser: BrowserFactory, world: World) -> None:
    page = _analyse(browser("clinician"), world)
    panel = page.split('id="ai-title"', 1)[1].split('id="report-title"', 1)[0]
    assert panel.count('class="badge badge-simulated"') == 2
    assert "Simulated output (mock provider)" in panel
    assert panel.count("Label probabilities") == 2


@pytest.mark.parametrize("settings", [PROVIDER_DOWN], indirect=True)
def test_a_failed_analysis_shows_its_error_status_and_reason(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    page = _analyse(browser("clinician"), world)
    (message,) = _flashes(page)
    assert message.startswith("Analysed 2 images; 2 analyses failed:")
    assert page.count('data-status="error"') == 2 and "analysis failed" in page
    stored = container.analyze.latest_for_study(CLI_CTX, world.study_id)
    error = stored[0].result.error
    assert error is not None and error.message in page and f"({error.code})" in page
    assert "No report yet" in page  # no ok result: nothing to report
    assert "sk-portal-canary" not in page
    worklist = browser("clinician").get("/portal/worklist?ai=error").text
    assert world.study_id in worklist and world.older_study_id not in worklist


def test_one_image_analysed_from_the_viewer_comes_back_to_that_slice(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("clinician")
    second = world.image_ids[1]
    response = reader.post(f"/portal/studies/{world.study_id}/analyze", {"image": second, "back": "viewer"})
    assert response.status_code == 303
    assert response.headers["location"] == f"/portal/series/{world.series_id}?image={second}#ai-side"
    page = _follow(reader, response)
    data = _viewer_data(page)
    assert data["start"] == 1 and data["slices"][1]["image"] == second
    assert set(data["ai"]) == {second}
    shown = data["ai"][second]
    stored = container.analyze.latest_for_study(CLI_CTX, world.study_id)[0].result
    assert shown["status"] == "ok" and shown["risk"] == stored.risk_score
    assert [f["description"] for f in shown["findings"]] == [f.description for f in stored.findings]
    assert shown["provider"] == "builtin" and shown["simulated"] is False
    assert 'id="ai-side"' in page and 'name="back" value="viewer"' in page
    assert _count(container, "ai.analyze") == 1
    other = reader.post(f"/portal/studies/{world.study_id}/analyze", {"image": world.quarantined_id})
    assert other.status_code == 404  # not an image of this study


def test_analysing_needs_the_csrf_token_and_a_role_that_may_analyse(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("radiologist")
    forged = reader.http.post(f"/portal/studies/{world.study_id}/analyze", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    missing = reader.http.post(f"/portal/studies/{world.study_id}/analyze", data={})
    assert missing.status_code == 403
    for role in ("uploader", "auditor"):
        refused = browser(role).post(f"/portal/studies/{world.study_id}/analyze")
        assert refused.status_code == 403 and "Access denied" in refused.text
    assert _count(container, "ai.analyze") == 0
    denied = container.audit.search(CLI_CTX, AuditFilter(action="access.denied")).items
    assert sorted(event.actor_name for event in denied) == [
        "auditor1",
        "radiologist1",
        "radiologist1",
        "uploader1",
    ]
    assert container.analyze.for_study(CLI_CTX, world.study_id) == []


def test_the_viewer_shows_no_ai_panel_or_form_to_whom_it_does_not_apply(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    container.analyze.analyze(CLI_CTX, world.image_ids[0])
    page = browser("clinician").get(f"/portal/series/{world.series_id}").text
    data = _viewer_data(page)
    assert data["start"] == 0 and set(data["ai"]) == {world.image_ids[0]}
    assert 'id="ai-analyze-form"' in page  # clinicians may analyse
    unknown = browser("clinician").get(f"/portal/series/{world.series_id}?image={'0' * 32}").text
    assert _viewer_data(unknown)["start"] == 0


# --- the report panel and its downloads --------------------------------------------------------


def test_report_panel_shows_the_preliminary_status_ledger_entry_and_downloads(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    container.analyze.analyze(CLI_CTX, world.image_ids[0])
    reader = browser("clinician")
    page = reader.get(f"/portal/studies/{world.study_id}").text
    report = container.reports.build(CLI_CTX, world.study_id)
    assert "PRELIMINARY — AI-GENERATED, NOT FOR CLINICAL USE" in page
    assert report.report_id in page and report.ledger_hash and report.ledger_hash in page
    assert f'<dd class="mono">{report.ledger_index}</dd>' in page
    assert "Awaiting sign-off by a radiologist." in page
    assert 'id="confirm-form"' not in page and "/sign" not in page  # clinicians do not sign
    links = re.findall(r'href="(/portal/studies/[0-9a-f]+/report/[a-z]+)"', page)
    assert links == [f"/portal/studies/{world.study_id}/report/{fmt}" for fmt in ("pdf", "sr", "fhir")]

    pdf = reader.get(links[0])
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and pdf.headers["cache-control"] == "private, no-store"
    assert pdf.headers["content-disposition"] == f'attachment; filename="{report.report_id}.pdf"'
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert report.report_id in re.sub(r"\s+", "", text)
    sr = reader.get(links[1])
    assert sr.headers["content-disposition"] == f'attachment; filename="{report.report_id}.dcm"'
    assert pydicom.dcmread(io.BytesIO(sr.content)).VerificationFlag == "UNVERIFIED"
    fhir = reader.get(links[2])
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    assert json.loads(fhir.content)["resourceType"] == "Bundle"
    for body in (page, pdf.content, sr.content, fhir.content):
        assert contains_phi(body) == []
    reads = container.audit.search(CLI_CTX, AuditFilter(action="report.read", username="clinician1"))
    formats = sorted(json.loads(event.detail)["format"] for event in reads.items)
    assert formats == ["fhir", "pdf", "sr", "summary"]
    assert reader.get(f"/portal/studies/{world.study_id}/report/docx").status_code == 400


def test_report_downloads_are_refused_without_a_result_and_to_other_roles(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("radiologist")
    missing = reader.get(f"/portal/studies/{world.study_id}/report/pdf")
    assert missing.status_code == 404 and "No AI result for this study yet." in missing.text
    container.analyze.analyze(CLI_CTX, world.image_ids[0])
    for role in ("uploader", "auditor"):
        assert browser(role).get(f"/portal/studies/{world.study_id}/report/pdf").status_code == 403


# --- sign-off ------------------------------------------------------------------------------------


def _sign(reader: Browser, world: World, **data: str | list[str]) -> tuple[int, str]:
    response = reader.post(f"/portal/studies/{world.study_id}/sign", data)  # type: ignore[arg-type]
    if response.status_code != 303:
        return response.status_code, response.text
    assert response.headers["location"] == f"/portal/studies/{world.study_id}#report-title"
    return 303, reader.get(f"/portal/studies/{world.study_id}").text


def test_radiologist_confirms_and_a_second_sign_off_is_a_message_not_an_error(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    container.analyze.analyze(CLI_CTX, world.image_ids[0])
    reader = browser("radiologist")
    form = reader.get(f"/portal/studies/{world.study_id}").text
    assert 'id="confirm-form"' in form and 'id="edit-form"' in form and 'id="reject-form"' in form
    status, page = _sign(reader, world, decision="confirm", comment="Agree with the QC.")
    assert status == 303
    (message,) = _flashes(page)
    assert message.startswith("Report signed: FINAL — signed by radiologist1 on 2026-03-01 09:00 UTC")
    assert 'data-status="final"' in page and "Confirmed as proposed" in page
    assert "Agree with the QC." in page
    assert 'id="confirm-form"' not in page and 'id="edit-form"' not in page
    report = container.reports.build(CLI_CTX, world.study_id)
    assert report.ledger_hash in page

    other = browser("admin", username="admin2")
    status, page = _sign(other, world, decision="reject", comment="too late")
    assert status == 303
    assert _flashes(page) == ["This report had already been signed, so your sign-off was not recorded."]
    assert 'data-status="final"' in page
    assert _count(container, "report.confirmed", world.study_id) == 1
    assert _count(container, "report.rejected", world.study_id) == 0


def test_radiologist_edits_narrative_diagnosis_and_findings_before_signing(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    analysis = container.analyze.analyze(CLI_CTX, world.image_ids[0])
    findings = analysis.result.findings
    assert len(findings) >= 2
    image = world.image_ids[0]
    reader = browser("radiologist")
    form = reader.get(f"/portal/studies/{world.study_id}").text
    posted = re.findall(r'<option value="([^"]+)" selected>', form.split('id="edit-form"', 1)[1])
    assert posted == [f"{image}:{n}:{f.severity.value}" for n, f in enumerate(findings)]
    new_severity = "critical" if findings[1].severity.value != "critical" else "low"
    changes = [f"{image}:0:remove", f"{image}:1:{new_severity}", *posted[2:]]
    status, page = _sign(
        reader,
        world,
        decision="edit",
        narrative="Image quality reviewed; see the changes.",
        diagnosis="Technically adequate study",
        finding=changes,
        comment="",
    )
    assert status == 303, page
    assert _flashes(page)[0].startswith("Report signed: FINAL")
    assert "Confirmed with edits" in page
    assert "<strong>Clinician's diagnosis:</strong> Technically adequate study" in page
    assert f"finding “{findings[0].description}” removed" in page
    assert f"severity changed from {findings[1].severity.value} to {new_severity}" in page
    assert "Image quality reviewed; see the changes." in page

    report = container.reports.build(CLI_CTX, world.study_id)
    assert report.sign_off is not None and len(report.sign_off.amendments) == 2
    assert [f.description for f in report.images[0].findings] == [f.description for f in findings[1:]]
    assert report.images[0].findings[0].severity.value == new_severity
    event = container.audit.search(CLI_CTX, AuditFilter(action="report.edited")).items[0]
    assert json.loads(event.detail)["edited"] == ["diagnosis", "findings", "narrative"]

    # The signed report stays what was signed when the image is analysed again.
    container.analyze.analyze(CLI_CTX, image, provider="mock")
    again = container.reports.build(CLI_CTX, world.study_id)
    assert again.content_sha256() == report.content_sha256()
    assert again.images[0].provenance.provider == "builtin"


def test_an_edit_that_changes_nothing_is_refused_with_a_message(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    analysis = container.analyze.analyze(CLI_CTX, world.image_ids[0])
    reader = browser("radiologist")
    report = container.reports.build(CLI_CTX, world.study_id)
    unchanged = [
        f"{world.image_ids[0]}:{n}:{f.severity.value}" for n, f in enumerate(analysis.result.findings)
    ]
    status, page = _sign(reader, world, decision="edit", narrative=report.conclusion or "", finding=unchanged)
    assert status == 303
    assert _flashes(page) == [
        "Not signed: an edit needs a corrected narrative, a diagnosis or a changed finding."
    ]
    assert 'data-status="preliminary"' in page and 'id="edit-form"' in page
    status, page = _sign(reader, world, decision="edit", finding=["not-a-finding"])
    assert status == 303 and _flashes(page) == [
        "Not signed: a finding field of the sign-off form is malformed."
    ]
    assert _count(container, "report.edited") == 0


def test_radiologist_rejects_with_a_comment(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    container.analyze.analyze(CLI_CTX, world.image_ids[0])
    status, page = _sign(browser("radiologist"), world, decision="reject", comment="Wrong series analysed.")
    assert status == 303
    assert 'data-status="rejected"' in page and "REJECTED — by radiologist1" in page
    assert "Wrong series analysed." in page and 'id="reject-form"' not in page
    clinician_view = browser("clinician").get(f"/portal/studies/{world.study_id}").text
    assert "REJECTED — by radiologist1" in clinician_view and "Download PDF" in clinician_view


def test_clinicians_and_forged_forms_cannot_sign(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    container.analyze.analyze(CLI_CTX, world.image_ids[0])
    clinician = browser("clinician")
    status, text = _sign(clinician, world, decision="confirm")
    assert status == 403 and "Access denied" in text
    denied = container.audit.search(CLI_CTX, AuditFilter(action="access.denied", username="clinician1"))
    assert '"route": "/portal/studies/{study_id}/sign"' in denied.items[0].detail
    radiologist = browser("radiologist")
    forged = radiologist.http.post(
        f"/portal/studies/{world.study_id}/sign", data={"csrf_token": "x", "decision": "confirm"}
    )
    assert forged.status_code == 403
    cross_site = radiologist.http.post(
        f"/portal/studies/{world.study_id}/sign",
        data={"csrf_token": radiologist.csrf(), "decision": "confirm"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status_code == 403
    assert container.reports.build(CLI_CTX, world.study_id).status.value == "preliminary"


# --- worklist and timeline -----------------------------------------------------------------------


def _listed(html: str, world: World) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    order = []
    for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S):
        order += [
            name for name, key in (("new", world.study_id), ("old", world.older_study_id)) if key in row
        ]
    return order


def test_worklist_filters_and_sorts_on_ai_status_and_risk(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("radiologist")
    everything = reader.get("/portal/worklist").text
    assert everything.count('data-ai-status="not_analysed"') == 2
    assert _listed(reader.get("/portal/worklist?ai=analysed").text, world) == []
    risk = container.analyze.analyze(CLI_CTX, _older_image(container, world)).result
    assert risk.risk_score is not None
    assert _listed(reader.get("/portal/worklist?ai=analysed").text, world) == ["old"]
    assert _listed(reader.get("/portal/worklist?ai=not_analysed").text, world) == ["new"]
    assert _listed(reader.get("/portal/worklist").text, world) == ["new", "old"]  # newest first
    assert _listed(reader.get("/portal/worklist?sort=oldest").text, world) == ["old", "new"]
    assert _listed(reader.get("/portal/worklist?sort=risk").text, world) == ["old", "new"]
    assert _listed(reader.get(f"/portal/worklist?min_risk={risk.risk_score}").text, world) == ["old"]
    assert _listed(reader.get(f"/portal/worklist?min_risk={risk.risk_score + 1}").text, world) == []
    listed = reader.get("/portal/worklist").text
    assert f"Risk {risk.risk_score}" in listed and "Analysed, awaiting sign-off" in listed
    container.reports.sign(CLI_CTX, world.older_study_id, "confirm")
    signed = reader.get("/portal/worklist?ai=signed").text
    assert _listed(signed, world) == ["old"] and "Signed · confirmed" in signed
    timeline = reader.get(f"/portal/patients/{world.pseudonym}").text
    assert 'data-ai-status="signed"' in timeline and 'data-ai-status="not_analysed"' in timeline
    for bad in ("ai=great", "min_risk=101", "min_risk=abc", "min_risk=2.5"):
        response = reader.get(f"/portal/worklist?{bad}")
        assert response.status_code == 400, bad


def _older_image(container: Container, world: World) -> str:
    study = container.search.study(CLI_CTX, world.older_study_id)
    return study.series[0].instances[0].id


# --- the views' small helpers ------------------------------------------------------------------


def test_label_probabilities_are_listed_most_probable_first_untrained_last() -> None:
    result = AnalysisResult(
        status="ok",
        model_used="m",
        provenance=Provenance(provider="onnx", model="m", version="1"),
        processing_time=0.1,
        timestamp=datetime(2026, 3, 1, tzinfo=UTC),
        label_probabilities={"b": 0.2, "untrained": None, "a": 0.9, "c": 0.2},
    )
    row = AIRow("i", "s", "Series 1 · image 1", result)
    assert row.probabilities == [("a", 0.9), ("b", 0.2), ("c", 0.2), ("untrained", None)]


def test_finding_fields_parse_into_edits_and_malformed_ones_are_refused() -> None:
    assert finding_edits(["abc:0:remove", "abc:12:high"]) == [
        FindingEdit("abc", 0, remove=True),
        FindingEdit("abc", 12, severity="high"),
    ]
    for bad in ("abc", "abc:x:low", "abc:1:grave", ":1:low", "abc:-1:low", "abc:99999:low"):
        with pytest.raises(InvalidRequest):
            finding_edits([bad])


def test_a_large_study_is_sampled_evenly_ends_included() -> None:
    items = [str(n) for n in range(10)]
    assert evenly_spaced(items, 4) == ["0", "3", "6", "9"]
    assert evenly_spaced(items, 10) == items and evenly_spaced(items[:3], 5) == items[:3]
    assert evenly_spaced(items, 1) == ["0"]
