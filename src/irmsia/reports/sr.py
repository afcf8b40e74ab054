"""A DICOM Comprehensive 3D SR (TID 1500 Measurement Report) of a report, built with highdicom.

Content tree (PS3.16 TID 1500 / 1501):

* Observer context: one device observer per distinct algorithm (provider, model, version).
* Procedure reported: (363679005, SCT, "Imaging procedure").
* Imaging Measurements: per image one Measurement Group with the image as its source, the
  algorithm identification (TID 4019), the risk score and each label probability as
  numeric measurements, and TEXT items for the suggested diagnosis (Impression), each
  recommendation and the narrative (Comment); then one group per finding with its
  free-text description as a local code (plus a TEXT "Finding" when longer than a Code
  Meaning may be), its location as a finding site, its confidence, and its severity as a
  SNOMED-coded qualitative evaluation.
* Qualitative Evaluations: the report's conclusion (TEXT "Conclusion", the clinician's
  edited narrative when there is one), the clinician's diagnosis (TEXT "Impression"), the
  changes made to the AI findings at sign-off, the sign-off comment, the rejection note and
  the AI disclaimer (TEXT "Comment").

Free text without a standard code is carried under the private coding scheme ``99IRMSIA``,
declared in the Coding Scheme Identification Sequence. An unsigned report is PARTIAL,
UNVERIFIED and PRELIMINARY; a signed one COMPLETE, VERIFIED (the clinician as verifying
observer, at the sign-off time) and FINAL. Patient and study attributes are the
de-identified ones only (Patient's Name and ID = the pseudonym, Patient Identity Removed =
YES). UIDs are derived from the content (UUID v5 under 2.25), so the same report always
gives the same bytes and a new state of the report a new SOP Instance UID.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterable

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    CodedConcept,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DA, DT, TM

from irmsia.errors import InvalidRequest
from irmsia.reports.model import (
    DISCLAIMER,
    SIMULATED_NOTE,
    UNSIGNED_NOTE,
    Finding,
    ImageResult,
    Provenance,
    Report,
    ReportStatus,
    Severity,
)

__all__ = ["LOCAL_SCHEME", "SEVERITY_CODES", "build_sr", "sr_sop_instance_uid"]

LOCAL_SCHEME = "99IRMSIA"
MANUFACTURER = "IRMSIA"
SERIES_NUMBER = 9901
# Name-based UIDs (PS3.5 B.2: "2.25." + the UUID as an integer); the namespace is ours.
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:irmsia:reports:dicom-sr")

# SNOMED CT severity qualifier values; "critical" has no graded step, so life threatening.
SEVERITY_CODES: dict[Severity, CodedConcept] = {
    Severity.NORMAL: CodedConcept("17621005", "SCT", "Normal"),
    Severity.LOW: CodedConcept("255604002", "SCT", "Mild"),
    Severity.MODERATE: CodedConcept("6736007", "SCT", "Moderate"),
    Severity.HIGH: CodedConcept("24484000", "SCT", "Severe"),
    Severity.CRITICAL: CodedConcept("442452003", "SCT", "Life threatening severity"),
}
_SEVERITY = CodedConcept("246112005", "SCT", "Severity")
_IMAGING_PROCEDURE = CodedConcept("363679005", "SCT", "Imaging procedure")
_QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
_RISK_SCORE = CodedConcept("RISKSCORE", LOCAL_SCHEME, "AI risk score (0-100)")
_CONFIDENCE = CodedConcept("CONFIDENCE", LOCAL_SCHEME, "AI confidence")
_SCORE_UNIT = CodedConcept("{score}", "UCUM", "score")
_NO_UNITS = CodedConcept("1", "UCUM", "no units")
_LO_MAX = 64  # Code Meaning (LO), Person Name component groups


def sr_sop_instance_uid(report: Report) -> str:
    """The SOP Instance UID ``build_sr`` gives this state of the report."""
    return _uid("instance", report.study.study_instance_uid, report.content_sha256())


def build_sr(report: Report, *, verifying_organization: str = MANUFACTURER) -> bytes:
    """Encode ``report`` as a Comprehensive 3D SR and return DICOM Part 10 bytes.

    ``verifying_organization`` names the organisation of the signing clinician (Verifying
    Organization is required once verified). Raises InvalidRequest when the report has no
    image results.
    """
    if not report.images:
        raise InvalidRequest("a report needs at least one image result")
    content = _content(report)
    evidence = [_evidence(report, image) for image in report.images]
    study = report.study
    moment = report.created_at
    try:
        sr = Comprehensive3DSR(
            evidence=evidence,
            content=content[0],
            series_instance_uid=_uid("series", study.study_instance_uid, report.report_id),
            series_number=SERIES_NUMBER,
            sop_instance_uid=sr_sop_instance_uid(report),
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=report.is_signed,
            is_final=report.is_signed,
            is_verified=False,  # set below, with the sign-off time instead of the clock
            record_evidence=True,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            specific_character_set="ISO_IR 192",
            coding_schemes=[
                CodingSchemeIdentificationItem(
                    designator=LOCAL_SCHEME, name="IRMSIA local codes for AI report content"
                )
            ],
            series_description="AI diagnostic report",
            content_date=DA(moment.date()),
            content_time=TM(moment.time()),
        )
    except (TypeError, ValueError) as exc:
        # highdicom checks value formats; our model should have refused anything it rejects.
        raise InvalidRequest(f"report {report.report_id} cannot be encoded as DICOM SR") from exc
    created = report.sign_off.signed_at if report.sign_off else moment
    sr.InstanceCreationDate = DA(created.date())
    sr.InstanceCreationTime = TM(created.time())
    for equipment in sr.get("ContributingEquipmentSequence", []):
        equipment.ContributionDateTime = DT(created)  # highdicom stamps its own clock here
    sr.PatientName = report.patient_pseudonym
    sr.PatientID = report.patient_pseudonym
    sr.PatientIdentityRemoved = "YES"
    sr.DeidentificationMethod = "IRMSIA pseudonymisation"
    if report.sign_off is not None:
        observer = Dataset()
        observer.VerifyingObserverName = _person_name(report.sign_off.username)
        observer.VerifyingOrganization = verifying_organization[:_LO_MAX]
        observer.VerificationDateTime = DT(report.sign_off.signed_at)
        observer.VerifyingObserverIdentificationCodeSequence = []  # Type 2: logins are not coded
        sr.VerificationFlag = "VERIFIED"
        sr.VerifyingObserverSequence = [observer]
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _uid(*parts: str) -> str:
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(parts)).int}"


def _local(prefix: str, text: str) -> CodedConcept:
    """A ``99IRMSIA`` code for free text: a digest as Code Value (SH), the text as meaning."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:12].upper()
    return CodedConcept(f"{prefix}{digest}", LOCAL_SCHEME, _fit(text, _LO_MAX))


def _fit(text: str, limit: int) -> str:
    text = " ".join(text.replace("\\", "/").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _person_name(username: str) -> str:
    # A login is one component; the trailing caret marks it as the family-name group (PS3.5 6.2).
    return _fit(username.replace("^", " ").replace("=", " "), _LO_MAX - 1) + "^"


def _evidence(report: Report, image: ImageResult) -> Dataset:
    """The de-identified attributes of a referenced image, as highdicom's evidence."""
    ds = Dataset()
    ds.SOPClassUID = image.sop_class_uid
    ds.SOPInstanceUID = image.sop_instance_uid
    ds.SeriesInstanceUID = image.series_instance_uid
    ds.StudyInstanceUID = report.study.study_instance_uid
    # Patient's Name is set on the SR afterwards: highdicom warns on a one-component name.
    ds.PatientName = ""
    ds.PatientID = report.patient_pseudonym
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.AccessionNumber = report.study.accession_pseudonym or ""
    ds.StudyID = ""
    ds.StudyDate = DA(report.study.study_date) if report.study.study_date else ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    return ds


def _text(name: CodedConcept, value: str) -> TextContentItem:
    return TextContentItem(name=name, value=value, relationship_type=RelationshipTypeValues.CONTAINS)


def _device(provenance: Provenance) -> ObserverContext:
    return ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=_uid("device", provenance.provider, provenance.model, provenance.version),
            name=_fit(f"{provenance.model} {provenance.version}", _LO_MAX),
            manufacturer_name=_fit(provenance.provider, _LO_MAX),
            model_name=_fit(provenance.model, _LO_MAX),
        ),
    )


def _algorithm(provenance: Provenance) -> AlgorithmIdentification:
    parameters = [f"provider={provenance.provider}"]
    if provenance.weights_sha256:
        parameters.append(f"weights_sha256={provenance.weights_sha256}")
    return AlgorithmIdentification(
        name=_fit(provenance.model, _LO_MAX), version=_fit(provenance.version, _LO_MAX), parameters=parameters
    )


def _distinct(provenances: Iterable[Provenance]) -> list[Provenance]:
    seen: dict[tuple[str, str, str], Provenance] = {}
    for provenance in provenances:
        seen.setdefault((provenance.provider, provenance.model, provenance.version), provenance)
    return list(seen.values())


def _content(report: Report) -> MeasurementReport:
    devices = [_device(provenance) for provenance in _distinct(i.provenance for i in report.images)]
    sr_uid = sr_sop_instance_uid(report)
    groups: list[MeasurementsAndQualitativeEvaluations] = []
    for image in report.images:
        groups.append(_image_group(sr_uid, image))
        groups.extend(
            _finding_group(sr_uid, image, n, finding) for n, finding in enumerate(image.findings, 1)
        )
    tree = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=devices[0]),
        procedure_reported=_IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    root = tree[0].ContentSequence
    # TID 1002 may repeat: further algorithms go right after the first one, before the procedure.
    position = next(i for i, item in enumerate(root) if item.ConceptNameCodeSequence[0].CodeValue == "121058")
    for device in reversed(devices[1:]):
        for item in reversed(device):
            root.insert(position, item)
    root.append(_evaluations(report))
    return tree


def _image_group(sr_uid: str, image: ImageResult) -> MeasurementsAndQualitativeEvaluations:
    measurements = [Measurement(name=_RISK_SCORE, value=image.risk_score, unit=_SCORE_UNIT)]
    measurements.extend(
        Measurement(name=_local("P", f"Probability of {label}"), value=probability, unit=_NO_UNITS)
        for label, probability in sorted(image.probabilities.items())
    )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=_uid("tracking", sr_uid, image.image_id), identifier=f"AI result {image.image_id}"
        ),
        algorithm_id=_algorithm(image.provenance),
        measurements=measurements,
        source_images=[SourceImageForMeasurementGroup(image.sop_class_uid, image.sop_instance_uid)],
    )
    items = group[0].ContentSequence
    if image.suggested_diagnosis:
        items.append(_text(CodedConcept.from_code(codes.DCM.Impression), image.suggested_diagnosis))
    for recommendation in image.recommendations:
        items.append(_text(CodedConcept.from_code(codes.DCM.Recommendation), recommendation))
    if image.narrative:
        items.append(_text(CodedConcept.from_code(codes.DCM.Comment), image.narrative))
    if image.simulated:
        items.append(_text(CodedConcept.from_code(codes.DCM.Comment), SIMULATED_NOTE))
    return group


def _finding_group(
    sr_uid: str, image: ImageResult, number: int, finding: Finding
) -> MeasurementsAndQualitativeEvaluations:
    sites = [FindingSite(anatomic_location=_local("S", finding.location))] if finding.location else None
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=_uid("tracking", sr_uid, image.image_id, str(number)),
            identifier=f"AI finding {number} of {image.image_id}",
        ),
        finding_type=_local("F", finding.description),
        algorithm_id=_algorithm(image.provenance),
        finding_sites=sites,
        measurements=[Measurement(name=_CONFIDENCE, value=finding.confidence, unit=_NO_UNITS)],
        qualitative_evaluations=[QualitativeEvaluation(_SEVERITY, SEVERITY_CODES[finding.severity])],
        source_images=[SourceImageForMeasurementGroup(image.sop_class_uid, image.sop_instance_uid)],
    )
    if len(finding.description) > _LO_MAX:
        # The coded finding's meaning is cut at 64 characters; a TEXT item keeps it whole.
        group[0].ContentSequence.append(_text(CodedConcept.from_code(codes.DCM.Finding), finding.description))
    return group


def _evaluations(report: Report) -> ContainerContentItem:
    """TID 1500's Qualitative Evaluations container: conclusion, sign-off notes, disclaimer."""
    container = ContainerContentItem(
        name=_QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    comment = CodedConcept.from_code(codes.DCM.Comment)
    items: list[TextContentItem | CodeContentItem] = []
    if report.conclusion:
        items.append(_text(CodedConcept.from_code(codes.DCM.Conclusion), report.conclusion))
    if report.status is ReportStatus.REJECTED:
        items.append(
            _text(
                comment,
                "REJECTED by the verifying clinician: the AI results in this document were not accepted.",
            )
        )
    if report.sign_off is not None:
        if report.sign_off.edited_diagnosis:
            items.append(
                _text(CodedConcept.from_code(codes.DCM.Impression), report.sign_off.edited_diagnosis)
            )
        for amendment in report.sign_off.amendments:
            items.append(_text(comment, f"Changed at sign-off: {amendment}"))
        if report.sign_off.comment:
            items.append(_text(comment, report.sign_off.comment))
    disclaimer = DISCLAIMER if report.is_signed else f"{DISCLAIMER} {UNSIGNED_NOTE}"
    items.append(_text(comment, disclaimer))
    container.ContentSequence = ContentSequence(items)
    return container
