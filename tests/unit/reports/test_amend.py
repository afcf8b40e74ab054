"""Sign-off edits: findings removed or re-graded, the clinician's diagnosis, in every format."""

from __future__ import annotations

import io
import json
import re

import pydicom
import pytest
from pydantic import ValidationError
from pypdf import PdfReader

from irmsia.errors import InvalidRequest
from irmsia.reports.amend import FindingEdit, apply_finding_edits
from irmsia.reports.fhir import build_fhir_json
from irmsia.reports.model import Report, ReportStatus, Severity, SignOff, SignOffAction
from irmsia.reports.pdf import build_pdf
from irmsia.reports.sr import build_sr
from tests.unit.reports.conftest import SIGNED, build_report


def _signed_with(report: Report, **edits: object) -> Report:
    sign_off = SignOff(
        user_id="u-42", username="dr.house", signed_at=SIGNED, action=SignOffAction.EDITED, **edits
    )
    return report.model_copy(update={"status": ReportStatus.FINAL, "sign_off": sign_off})


def test_removing_and_regrading_findings_changes_only_those_and_says_so(preliminary: Report) -> None:
    first, second = preliminary.images
    amended = apply_finding_edits(
        preliminary.images,
        [
            FindingEdit(second.image_id, 1, severity="high"),
            FindingEdit(first.image_id, 0, remove=True),
        ],
    )
    assert [f.description for f in amended.images[0].findings] == ["Pleural effusion"]
    assert [f.severity for f in amended.images[1].findings] == [Severity.MODERATE, Severity.HIGH]
    assert amended.images[1].findings[0] == second.findings[0]
    assert amended.amendments == (
        "Image 1 (img-0000): finding “Focal opacity” removed (AI severity moderate).",
        "Image 2 (img-0001): finding “Pleural effusion” severity changed from low to high.",
    )
    # In report order, whatever order they were given in; stored as JSON and read back the same.
    assert [(e.image_id, e.index) for e in amended.edits] == [(first.image_id, 0), (second.image_id, 1)]
    again = [FindingEdit.from_json(json.loads(json.dumps(e.to_json()))) for e in amended.edits]
    assert apply_finding_edits(preliminary.images, again) == amended


def test_edits_that_change_nothing_are_dropped(preliminary: Report) -> None:
    image = preliminary.images[0]
    amended = apply_finding_edits(preliminary.images, [FindingEdit(image.image_id, 0, severity="moderate")])
    assert amended.amendments == () and amended.edits == ()
    assert amended.images == preliminary.images


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (FindingEdit("img-9999", 0, remove=True), "not in the report"),
        (FindingEdit("img-0000", 2, remove=True), "does not have"),
        (FindingEdit("img-0000", -1, remove=True), "does not have"),
        (FindingEdit("img-0000", 0, severity="grave"), "severity must be one of"),
        (FindingEdit("img-0000", 0, severity="low", remove=True), "either removes"),
        (FindingEdit("img-0000", 0), "either removes"),
    ],
)
def test_malformed_edits_are_refused(preliminary: Report, edit: FindingEdit, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        apply_finding_edits(preliminary.images, [edit])


def test_a_finding_changed_twice_is_refused(preliminary: Report) -> None:
    with pytest.raises(InvalidRequest, match="twice"):
        apply_finding_edits(
            preliminary.images,
            [FindingEdit("img-0000", 0, remove=True), FindingEdit("img-0000", 0, severity="high")],
        )


def test_an_edited_sign_off_may_carry_only_a_diagnosis_or_only_amendments() -> None:
    SignOff(user_id="u", username="dr", signed_at=SIGNED, action=SignOffAction.EDITED, edited_diagnosis="X")
    SignOff(user_id="u", username="dr", signed_at=SIGNED, action=SignOffAction.EDITED, amendments=("A.",))
    for action in (SignOffAction.CONFIRMED, SignOffAction.REJECTED):
        with pytest.raises(ValidationError):
            SignOff(user_id="u", username="dr", signed_at=SIGNED, action=action, edited_diagnosis="X")
        with pytest.raises(ValidationError):
            SignOff(user_id="u", username="dr", signed_at=SIGNED, action=action, amendments=("A.",))


def test_unused_new_sign_off_fields_stay_out_of_the_registered_content(final: Report) -> None:
    # Reports signed before diagnosis and amendments existed keep their ledger digests.
    sign_off = final.content()["sign_off"]
    assert "edited_diagnosis" not in sign_off and "amendments" not in sign_off
    with_diagnosis = _signed_with(build_report(), edited_diagnosis="Atelectasis")
    assert with_diagnosis.content()["sign_off"]["edited_diagnosis"] == "Atelectasis"
    assert (
        with_diagnosis.content_sha256()
        != _signed_with(build_report(), edited_diagnosis="Other").content_sha256()
    )


def test_diagnosis_and_amendments_appear_in_the_pdf_sr_and_fhir(preliminary: Report) -> None:
    amended = apply_finding_edits(preliminary.images, [FindingEdit("img-0000", 0, remove=True)])
    report = _signed_with(
        preliminary.model_copy(update={"images": amended.images}),
        edited_diagnosis="Right lower lobe atelectasis",
        amendments=amended.amendments,
    )
    pdf = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(build_pdf(report))).pages)
    assert "Clinician's diagnosis" in pdf and "Right lower lobe atelectasis" in pdf
    assert "Changes to the AI findings" in pdf and "“Focal opacity” removed" in re.sub(r"\s+", " ", pdf)

    ds = pydicom.dcmread(io.BytesIO(build_sr(report)))

    def texts(dataset: pydicom.Dataset) -> list[str]:
        found = []
        for item in dataset.get("ContentSequence", []):
            if item.ValueType == "TEXT":
                found.append(item.TextValue)
            found += texts(item)
        return found

    sr_texts = texts(ds)
    assert "Right lower lobe atelectasis" in sr_texts
    assert f"Changed at sign-off: {amended.amendments[0]}" in sr_texts

    bundle = json.loads(build_fhir_json(report))
    diagnostic = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert "Clinician's diagnosis: Right lower lobe atelectasis" in diagnostic["conclusion"]
    assert f"Changed at sign-off: {amended.amendments[0]}" in diagnostic["conclusion"]
