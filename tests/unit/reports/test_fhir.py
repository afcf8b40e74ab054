"""The FHIR builder: a valid R4 collection Bundle whose DiagnosticReport mirrors the sign-off,
references its Observations and the ImagingStudy, and names the patient by pseudonym only."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from irmsia.errors import InvalidRequest
from irmsia.reports.fhir import PATIENT_PSEUDONYM_SYSTEM, build_fhir_bundle, build_fhir_json
from irmsia.reports.model import DISCLAIMER, Report, SignOffAction
from irmsia.reports.pdf import build_pdf
from tests.factories import PHI, PHI_DATES, contains_phi
from tests.unit.reports.conftest import EDITED

MakeReport = Callable[..., Report]


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _report(bundle: dict[str, Any]) -> dict[str, Any]:
    (report,) = _resources(bundle, "DiagnosticReport")
    return report


@pytest.fixture(scope="module")
def preliminary_bundle(preliminary: Report) -> dict[str, Any]:
    return build_fhir_bundle(preliminary)


def test_bundle_is_valid_fhir_r4(preliminary_bundle: dict[str, Any], final: Report) -> None:
    for data in (preliminary_bundle, build_fhir_bundle(final, pdf=build_pdf(final))):
        bundle = Bundle.model_validate(data)
        assert bundle.type == "collection"
        assert isinstance(bundle.entry[0].resource, DiagnosticReport)
        for entry in data["entry"]:
            resource = entry["resource"]
            model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            assert entry["fullUrl"] == f"urn:uuid:{model.id}"


def test_json_output_parses_as_the_same_bundle(
    preliminary: Report, preliminary_bundle: dict[str, Any]
) -> None:
    assert json.loads(build_fhir_json(preliminary)) == preliminary_bundle


@pytest.mark.parametrize(
    ("action", "status"),
    [
        (None, "preliminary"),
        (SignOffAction.CONFIRMED, "final"),
        (SignOffAction.EDITED, "final"),
        (SignOffAction.REJECTED, "cancelled"),
    ],
)
def test_status_follows_the_sign_off(
    make_report: MakeReport, action: SignOffAction | None, status: str
) -> None:
    bundle = build_fhir_bundle(make_report(1, action=action))
    assert _report(bundle)["status"] == status
    assert {o["status"] for o in _resources(bundle, "Observation")} == {status}


def test_one_observation_per_finding_probability_score_suggestion_and_recommendation(
    preliminary: Report, preliminary_bundle: dict[str, Any]
) -> None:
    observations = _resources(preliminary_bundle, "Observation")
    expected = sum(
        1 + 1 + len(i.recommendations) + len(i.findings) + len(i.probabilities) for i in preliminary.images
    )
    assert len(observations) == expected
    result = {ref["reference"] for ref in _report(preliminary_bundle)["result"]}
    assert result == {f"urn:uuid:{o['id']}" for o in observations}
    probabilities = {
        o["code"]["text"]: o["valueQuantity"]["value"]
        for o in observations
        if o["code"].get("text", "").startswith("Probability of")
    }
    assert probabilities == {
        "Probability of pneumonia": 0.81,
        "Probability of atelectasis": 0.34,
        "Probability of normal": 0.05,
    }


def test_findings_carry_description_interpretation_confidence_and_site(
    preliminary_bundle: dict[str, Any],
) -> None:
    findings = [
        o
        for o in _resources(preliminary_bundle, "Observation")
        if o["code"].get("coding", [{}])[0].get("code") == "121071"
    ]
    assert len(findings) == 4
    first = findings[0]
    assert first["valueString"] == "Focal opacity"
    assert first["interpretation"][0]["coding"][0]["code"] == "A"
    assert first["interpretation"][0]["text"] == "moderate"
    assert first["bodySite"] == {"text": "right lower lobe"}
    assert first["component"][0]["valueQuantity"]["value"] == 0.87
    assert first["component"][1]["valueCodeableConcept"]["coding"][0]["code"] == "6736007"
    assert "bodySite" not in findings[1]


def test_subject_is_a_logical_reference_by_pseudonym(
    preliminary: Report, preliminary_bundle: dict[str, Any]
) -> None:
    subject = _report(preliminary_bundle)["subject"]
    assert subject == {
        "type": "Patient",
        "identifier": {"system": PATIENT_PSEUDONYM_SYSTEM, "value": preliminary.patient_pseudonym},
    }
    assert not _resources(preliminary_bundle, "Patient")


def test_imaging_study_is_referenced_by_its_deidentified_uid(
    preliminary: Report, preliminary_bundle: dict[str, Any]
) -> None:
    (study,) = _report(preliminary_bundle)["imagingStudy"]
    assert study["identifier"]["value"] == f"urn:oid:{preliminary.study.study_instance_uid}"
    assert study["identifier"]["system"] == "urn:dicom:uid"


def test_performer_is_the_signer_once_signed(preliminary_bundle: dict[str, Any], final: Report) -> None:
    assert "performer" not in _report(preliminary_bundle)
    (performer,) = _report(build_fhir_bundle(final))["performer"]
    assert performer["display"] == "dr.house"
    assert performer["identifier"]["value"] == "u-42"


def test_issued_is_the_sign_off_time_once_signed(preliminary_bundle: dict[str, Any], final: Report) -> None:
    assert _report(preliminary_bundle)["issued"] == "2026-03-01T09:00:00Z"
    assert _report(build_fhir_bundle(final))["issued"] == "2026-03-02T14:30:00Z"


def test_conclusion_is_the_narrative_with_the_disclaimer(edited: Report) -> None:
    conclusion = _report(build_fhir_bundle(edited))["conclusion"]
    assert conclusion.startswith(EDITED)
    assert DISCLAIMER in conclusion


def test_pdf_is_attached_as_presented_form(final: Report) -> None:
    pdf = build_pdf(final)
    (form,) = _report(build_fhir_bundle(final, pdf=pdf))["presentedForm"]
    assert form["contentType"] == "application/pdf"
    assert base64.b64decode(form["data"]) == pdf
    assert form["size"] == len(pdf)
    assert base64.b64decode(form["hash"]) == hashlib.sha1(pdf, usedforsecurity=False).digest()


def test_algorithms_are_devices_referenced_by_observations(
    preliminary: Report, preliminary_bundle: dict[str, Any]
) -> None:
    (device,) = _resources(preliminary_bundle, "Device")
    provenance = preliminary.images[0].provenance
    assert device["manufacturer"] == provenance.provider
    assert device["deviceName"] == [{"name": provenance.model, "type": "model-name"}]
    assert device["version"] == [{"value": provenance.version}]
    references = {o["device"]["reference"] for o in _resources(preliminary_bundle, "Observation")}
    assert references == {f"urn:uuid:{device['id']}"}


def test_ledger_hash_is_an_identifier_once_registered(
    preliminary_bundle: dict[str, Any], final: Report
) -> None:
    assert len(_report(preliminary_bundle)["identifier"]) == 1
    identifiers = _report(build_fhir_bundle(final))["identifier"]
    assert final.ledger_hash in [identifier["value"] for identifier in identifiers]


def test_bundle_contains_no_phi(preliminary: Report, final: Report) -> None:
    for report in (preliminary, final):
        text = build_fhir_json(report).decode()
        assert contains_phi(text) == []
        for day in PHI_DATES:
            assert f"{day[:4]}-{day[4:6]}-{day[6:]}" not in text
        assert PHI["PatientName"].split("^")[0] not in text


def test_same_report_gives_the_same_bundle(preliminary: Report) -> None:
    assert build_fhir_json(preliminary) == build_fhir_json(preliminary)


def test_report_without_images_is_refused(make_report: MakeReport) -> None:
    with pytest.raises(InvalidRequest):
        build_fhir_bundle(Report.model_validate(make_report(1).model_dump() | {"images": ()}))
