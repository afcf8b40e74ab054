"""A FHIR R4 Bundle (type ``collection``) of a report: one DiagnosticReport and its parts.

Resources in the bundle, each with ``fullUrl`` ``urn:uuid:<id>`` (name-based UUIDs, so the
same report always gives the same bundle):

* ``DiagnosticReport``: status ``preliminary`` | ``final`` | ``cancelled`` (rejected),
  category RAD, code LOINC 18748-4, the subject as a *logical* Patient reference (the
  pseudonym as identifier, never a name), the ImagingStudy as a logical reference
  (identifier ``urn:dicom:uid`` = ``urn:oid:<study UID>``), ``issued`` (sign-off time, else
  creation time), ``performer`` (the signer, once signed), ``conclusion`` (the report's
  narrative, the clinician's diagnosis and changes made at sign-off), ``result`` (every Observation) and, when given, the PDF as ``presentedForm``.
  It carries the security label AIAST (artificial-intelligence asserted).
* per image: an Observation for the risk score, one for the suggested diagnosis, one per
  recommendation, one per finding (value = description, interpretation from severity,
  confidence and coded severity as components, location as body site) and one per label
  probability;
* one ``Device`` per distinct algorithm, referenced by the Observations it produced.

Only plain JSON-compatible data is built here, so this module needs no FHIR library; the
tests validate the output with ``fhir.resources`` (its R4B models: R4B changed no resource
used here).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from irmsia.errors import InvalidRequest
from irmsia.reports.model import (
    DISCLAIMER,
    SIMULATED_NOTE,
    Finding,
    ImageResult,
    Provenance,
    Report,
    ReportStatus,
    Severity,
)

__all__ = [
    "PATIENT_PSEUDONYM_SYSTEM",
    "REPORT_ID_SYSTEM",
    "build_fhir_bundle",
    "build_fhir_json",
]

PATIENT_PSEUDONYM_SYSTEM = "urn:irmsia:patient-pseudonym"
REPORT_ID_SYSTEM = "urn:irmsia:report"
USER_ID_SYSTEM = "urn:irmsia:user"
LEDGER_SYSTEM = "urn:irmsia:ledger-entry-sha256"
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:irmsia:reports:fhir")

_LOINC = "http://loinc.org"
_SNOMED = "http://snomed.info/sct"
_UCUM = "http://unitsofmeasure.org"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

_STATUS = {
    ReportStatus.PRELIMINARY: "preliminary",
    ReportStatus.FINAL: "final",
    ReportStatus.REJECTED: "cancelled",
}
# v3 ObservationInterpretation has no graded "abnormal": N, A, and AA for critical.
_INTERPRETATION_OF = {
    Severity.NORMAL: ("N", "Normal"),
    Severity.LOW: ("A", "Abnormal"),
    Severity.MODERATE: ("A", "Abnormal"),
    Severity.HIGH: ("A", "Abnormal"),
    Severity.CRITICAL: ("AA", "Critical abnormal"),
}
# The same SNOMED CT severity qualifiers as the DICOM SR.
_SEVERITY_CODE = {
    Severity.NORMAL: ("17621005", "Normal"),
    Severity.LOW: ("255604002", "Mild"),
    Severity.MODERATE: ("6736007", "Moderate"),
    Severity.HIGH: ("24484000", "Severe"),
    Severity.CRITICAL: ("442452003", "Life threatening severity"),
}


def build_fhir_bundle(
    report: Report,
    *,
    pdf: bytes | None = None,
    patient_system: str = PATIENT_PSEUDONYM_SYSTEM,
) -> dict[str, Any]:
    """The report as a FHIR R4 Bundle of type ``collection``, as JSON-compatible data.

    ``pdf`` (the bytes of ``build_pdf``) is attached as ``presentedForm`` when given.
    ``patient_system`` is the identifier system of the pseudonym. Raises InvalidRequest
    when the report has no image results.
    """
    if not report.images:
        raise InvalidRequest("a report needs at least one image result")
    return _Builder(report, patient_system).bundle(pdf)


def build_fhir_json(
    report: Report, *, pdf: bytes | None = None, patient_system: str = PATIENT_PSEUDONYM_SYSTEM
) -> bytes:
    """``build_fhir_bundle`` serialised as compact UTF-8 JSON (``application/fhir+json``)."""
    bundle = build_fhir_bundle(report, pdf=pdf, patient_system=patient_system)
    return json.dumps(bundle, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        concept["text"] = text
    return concept


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": _UCUM, "code": code}


class _Builder:
    """Holds the report-wide parts (status, subject, ids) while the resources are built."""

    def __init__(self, report: Report, patient_system: str) -> None:
        self.report = report
        self.status = _STATUS[report.status]
        sign_off = report.sign_off
        self.issued = _instant(sign_off.signed_at if sign_off else report.created_at)
        self.subject = {
            "type": "Patient",
            "identifier": {"system": patient_system, "value": report.patient_pseudonym},
        }
        self.study = {
            "type": "ImagingStudy",
            "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{report.study.study_instance_uid}"},
        }
        # Ids are name-based on the content digest: a new state of the report, new ids.
        self._seed = f"{report.study.study_instance_uid}|{report.content_sha256()}"
        self.devices: dict[tuple[str, str, str], dict[str, Any]] = {}

    def _id(self, *parts: str) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, "|".join((self._seed, *parts))))

    def bundle(self, pdf: bytes | None) -> dict[str, Any]:
        observations = []
        for image in self.report.images:
            observations.extend(self._observations(image))
        report = self._diagnostic_report(observations, pdf)
        entries = [report, *observations, *self.devices.values()]
        return {
            "resourceType": "Bundle",
            "id": self._id("bundle"),
            "identifier": {"system": REPORT_ID_SYSTEM, "value": self.report.report_id},
            "type": "collection",
            "timestamp": self.issued,
            "entry": [{"fullUrl": f"urn:uuid:{entry['id']}", "resource": entry} for entry in entries],
        }

    def _diagnostic_report(self, observations: list[dict[str, Any]], pdf: bytes | None) -> dict[str, Any]:
        report = self.report
        identifiers = [{"system": REPORT_ID_SYSTEM, "value": report.report_id}]
        if report.ledger_hash:
            identifiers.append({"system": LEDGER_SYSTEM, "value": report.ledger_hash})
        resource: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "id": self._id("report"),
            "meta": {
                "security": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                        "code": "AIAST",
                        "display": "Artificial Intelligence asserted",
                    }
                ]
            },
            "identifier": identifiers,
            "status": self.status,
            "category": [
                _concept("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology"),
            ],
            "code": _concept(
                _LOINC, "18748-4", "Diagnostic imaging study", "AI-assisted diagnostic imaging report"
            ),
            "subject": self.subject,
            "issued": self.issued,
            "imagingStudy": [self.study],
            "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
        }
        if report.study.study_date:
            resource["effectiveDateTime"] = report.study.study_date.isoformat()
        if report.sign_off is not None:
            resource["performer"] = [
                {
                    "type": "Practitioner",
                    "identifier": {"system": USER_ID_SYSTEM, "value": report.sign_off.user_id},
                    "display": report.sign_off.username,
                }
            ]
        conclusion = report.conclusion
        notes = [DISCLAIMER]
        if report.sign_off is not None:
            if report.sign_off.edited_diagnosis:
                notes.insert(0, f"Clinician's diagnosis: {report.sign_off.edited_diagnosis}")
            notes += [f"Changed at sign-off: {amendment}" for amendment in report.sign_off.amendments]
            if report.sign_off.comment:
                notes.append(f"Sign-off comment: {report.sign_off.comment}")
        resource["conclusion"] = "\n\n".join([conclusion, *notes] if conclusion else notes)
        if pdf is not None:
            resource["presentedForm"] = [
                {
                    "contentType": "application/pdf",
                    "language": "en",
                    "data": base64.b64encode(pdf).decode("ascii"),
                    "size": len(pdf),
                    # FHIR R4 Attachment.hash is defined as SHA-1 (an integrity hint, not security).
                    "hash": base64.b64encode(hashlib.sha1(pdf, usedforsecurity=False).digest()).decode(),
                    "title": f"Diagnostic report {report.report_id}",
                    "creation": self.issued,
                }
            ]
        return resource

    def _device(self, provenance: Provenance) -> dict[str, Any]:
        key = (provenance.provider, provenance.model, provenance.version)
        if key not in self.devices:
            device: dict[str, Any] = {
                "resourceType": "Device",
                "id": self._id("device", *key),
                "manufacturer": provenance.provider,
                "deviceName": [{"name": provenance.model, "type": "model-name"}],
                "version": [{"value": provenance.version}],
            }
            if provenance.weights_sha256:
                device["note"] = [{"text": f"Model weights SHA-256: {provenance.weights_sha256}"}]
            self.devices[key] = device
        return {"reference": f"urn:uuid:{self.devices[key]['id']}"}

    def _observation(
        self, image: ImageResult, key: str, code: dict[str, Any], value: dict[str, Any]
    ) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self._id("observation", image.image_id, key),
            "status": self.status,
            "category": [_concept(_OBSERVATION_CATEGORY, "imaging", "Imaging")],
            "code": code,
            "subject": self.subject,
            "issued": self.issued,
            **value,
            "device": self._device(image.provenance),
            "derivedFrom": [self.study],
        }
        if self.report.study.study_date:
            resource["effectiveDateTime"] = self.report.study.study_date.isoformat()
        if image.simulated:
            resource["note"] = [{"text": SIMULATED_NOTE}]
        return resource

    def _observations(self, image: ImageResult) -> list[dict[str, Any]]:
        observations = [
            self._observation(
                image,
                "risk",
                {"text": "AI risk score (0-100)"},
                {"valueQuantity": _quantity(image.risk_score, "score", "{score}")},
            )
        ]
        if image.suggested_diagnosis:
            observations.append(
                self._observation(
                    image,
                    "diagnosis",
                    _concept(_DCM, "121073", "Impression", "Suggested diagnosis"),
                    {"valueString": image.suggested_diagnosis},
                )
            )
        for n, recommendation in enumerate(image.recommendations, 1):
            observations.append(
                self._observation(
                    image,
                    f"recommendation-{n}",
                    _concept(_DCM, "121075", "Recommendation"),
                    {"valueString": recommendation},
                )
            )
        for n, finding in enumerate(image.findings, 1):
            observations.append(self._finding(image, n, finding))
        for label, probability in sorted(image.probabilities.items()):
            observations.append(
                self._observation(
                    image,
                    f"probability-{label}",
                    {"text": f"Probability of {label}"},
                    {"valueQuantity": _quantity(probability, "probability", "1")},
                )
            )
        return observations

    def _finding(self, image: ImageResult, number: int, finding: Finding) -> dict[str, Any]:
        code, display = _INTERPRETATION_OF[finding.severity]
        severity_code, severity_display = _SEVERITY_CODE[finding.severity]
        value: dict[str, Any] = {
            "valueString": finding.description,
            "interpretation": [_concept(_INTERPRETATION, code, display, finding.severity.value)],
            "component": [
                {
                    "code": {"text": "AI confidence"},
                    "valueQuantity": _quantity(finding.confidence, "probability", "1"),
                },
                {
                    "code": _concept(_SNOMED, "246112005", "Severity"),
                    "valueCodeableConcept": _concept(
                        _SNOMED, severity_code, severity_display, finding.severity.value
                    ),
                },
            ],
        }
        if finding.location:
            value["bodySite"] = {"text": finding.location}
        return self._observation(image, f"finding-{number}", _concept(_DCM, "121071", "Finding"), value)
