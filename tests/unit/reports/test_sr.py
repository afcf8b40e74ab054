"""The DICOM SR builder: a TID 1500 Comprehensive 3D SR that reads back, references the
analysed images, mirrors the sign-off in its flags and carries only de-identified values."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage

from irmsia.errors import InvalidRequest
from irmsia.reports.model import DISCLAIMER, Provenance, Report
from irmsia.reports.sr import LOCAL_SCHEME, SEVERITY_CODES, build_sr, sr_sop_instance_uid
from tests.factories import PHI, PHI_DATES, contains_phi
from tests.unit.reports.conftest import EDITED

MakeReport = Callable[..., Report]


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _items(ds: Dataset) -> Iterator[Dataset]:
    """Every content item of the tree, depth first."""
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _name(item: Dataset) -> tuple[str, str]:
    concept = item.ConceptNameCodeSequence[0]
    return concept.CodeValue, concept.CodingSchemeDesignator


def _texts(ds: Dataset, code: str) -> list[str]:
    return [
        item.TextValue for item in _items(ds) if item.ValueType == "TEXT" and _name(item) == (code, "DCM")
    ]


@pytest.fixture(scope="module")
def preliminary_sr(preliminary: Report) -> Dataset:
    return _read(build_sr(preliminary))


@pytest.fixture(scope="module")
def final_sr(final: Report) -> Dataset:
    return _read(build_sr(final))


def test_sr_is_a_comprehensive_3d_sr_with_a_tid_1500_root(
    preliminary: Report, preliminary_sr: Dataset
) -> None:
    assert preliminary_sr.SOPClassUID == Comprehensive3DSRStorage
    assert preliminary_sr.file_meta.MediaStorageSOPClassUID == Comprehensive3DSRStorage
    assert preliminary_sr.Modality == "SR"
    assert preliminary_sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert preliminary_sr.SOPInstanceUID == sr_sop_instance_uid(preliminary)
    # highdicom can read it back as a measurement report.
    document = hd.sr.Comprehensive3DSR.from_dataset(preliminary_sr)
    report = hd.sr.MeasurementReport.from_sequence(document.content)
    assert len(report.get_image_measurement_groups()) == 2 + 2 * 2  # per image: summary + 2 findings
    assert len(report.get_observer_contexts()) == 1


def test_content_tree_holds_every_finding_with_severity_and_confidence(
    preliminary: Report, preliminary_sr: Dataset
) -> None:
    findings = [
        item
        for item in _items(preliminary_sr)
        if item.ValueType == "CODE" and _name(item) == ("121071", "DCM")
    ]
    expected = [f.description for image in preliminary.images for f in image.findings]
    assert [item.ConceptCodeSequence[0].CodeMeaning for item in findings] == expected
    assert all(item.ConceptCodeSequence[0].CodingSchemeDesignator == LOCAL_SCHEME for item in findings)
    severities = [
        item.ConceptCodeSequence[0].CodeValue
        for item in _items(preliminary_sr)
        if item.ValueType == "CODE" and _name(item) == ("246112005", "SCT")
    ]
    assert severities == [
        SEVERITY_CODES[f.severity].value for image in preliminary.images for f in image.findings
    ]
    confidences = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in _items(preliminary_sr)
        if item.ValueType == "NUM" and _name(item) == ("CONFIDENCE", LOCAL_SCHEME)
    ]
    assert confidences == [f.confidence for image in preliminary.images for f in image.findings]


def test_risk_score_and_label_probabilities_are_measurements(preliminary_sr: Dataset) -> None:
    numbers = {
        item.ConceptNameCodeSequence[0].CodeMeaning: float(item.MeasuredValueSequence[0].NumericValue)
        for item in _items(preliminary_sr)
        if item.ValueType == "NUM"
    }
    assert numbers["AI risk score (0-100)"] == 62.5
    assert numbers["Probability of pneumonia"] == pytest.approx(0.81)
    assert numbers["Probability of atelectasis"] == pytest.approx(0.34)


def test_references_point_to_the_analysed_images(preliminary: Report, preliminary_sr: Dataset) -> None:
    referenced = {
        (
            item.ReferencedSOPSequence[0].ReferencedSOPClassUID,
            item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
        )
        for item in _items(preliminary_sr)
        if item.ValueType == "IMAGE"
    }
    expected = {(image.sop_class_uid, image.sop_instance_uid) for image in preliminary.images}
    assert referenced == expected
    evidence = preliminary_sr.CurrentRequestedProcedureEvidenceSequence
    assert [study.StudyInstanceUID for study in evidence] == [preliminary.study.study_instance_uid]
    listed = {
        (series.SeriesInstanceUID, sop.ReferencedSOPInstanceUID)
        for series in evidence[0].ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert listed == {(image.series_instance_uid, image.sop_instance_uid) for image in preliminary.images}


def test_patient_and_study_are_the_deidentified_values(preliminary: Report, preliminary_sr: Dataset) -> None:
    assert preliminary_sr.StudyInstanceUID == preliminary.study.study_instance_uid
    assert str(preliminary_sr.PatientName) == preliminary.patient_pseudonym
    assert preliminary_sr.PatientID == preliminary.patient_pseudonym
    assert preliminary_sr.AccessionNumber == preliminary.study.accession_pseudonym
    assert preliminary.study.study_date is not None
    assert preliminary_sr.StudyDate == preliminary.study.study_date.strftime("%Y%m%d")
    assert preliminary_sr.PatientIdentityRemoved == "YES"
    assert preliminary_sr.PatientBirthDate == ""


def test_algorithm_is_the_device_observer(preliminary: Report, preliminary_sr: Dataset) -> None:
    provenance = preliminary.images[0].provenance
    observer = {
        _name(item)[0]: item.get("TextValue")
        or item.get("ConceptCodeSequence", [Dataset()])[0].get("CodeValue")
        for item in preliminary_sr.ContentSequence
        if item.RelationshipType == "HAS OBS CONTEXT"
    }
    assert observer["121005"] == "121007"  # Observer Type = Device
    assert observer["121013"] == f"{provenance.model} {provenance.version}"
    assert observer["121014"] == provenance.provider
    algorithm = [item.TextValue for item in _items(preliminary_sr) if _name(item) == ("111001", "DCM")]
    assert algorithm and set(algorithm) == {provenance.model}
    assert f"weights_sha256={provenance.weights_sha256}" in [
        item.TextValue for item in _items(preliminary_sr) if _name(item) == ("111002", "DCM")
    ]


def test_each_distinct_algorithm_is_an_observer(make_report: MakeReport) -> None:
    report = make_report(2)
    other = report.images[1].model_copy(
        update={"provenance": Provenance(provider="llm", model="vision-x", version="2")}
    )
    ds = _read(build_sr(report.model_copy(update={"images": (report.images[0], other)})))
    names = [item.TextValue for item in ds.ContentSequence if _name(item) == ("121013", "DCM")]
    assert names == ["chest-ct-net 1.4.2", "vision-x 2"]
    # The observers come before the procedure reported, as TID 1001 orders them.
    codes = [_name(item)[0] for item in ds.ContentSequence]
    assert codes.index("121058") > max(i for i, code in enumerate(codes) if code == "121013")


def test_unsigned_report_is_partial_unverified_and_preliminary(preliminary_sr: Dataset) -> None:
    assert preliminary_sr.CompletionFlag == "PARTIAL"
    assert preliminary_sr.VerificationFlag == "UNVERIFIED"
    assert preliminary_sr.PreliminaryFlag == "PRELIMINARY"
    assert "VerifyingObserverSequence" not in preliminary_sr
    assert any(DISCLAIMER in text for text in _texts(preliminary_sr, "121106"))


def test_signed_report_is_complete_and_verified_by_the_signer(final_sr: Dataset) -> None:
    assert final_sr.CompletionFlag == "COMPLETE"
    assert final_sr.VerificationFlag == "VERIFIED"
    assert final_sr.PreliminaryFlag == "FINAL"
    observer = final_sr.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "dr.house^"
    assert observer.VerificationDateTime.startswith("20260302143000")
    assert final_sr.InstanceCreationDate == "20260302"
    assert final_sr.ContentDate == "20260301"


def test_edited_narrative_is_the_conclusion(edited: Report) -> None:
    ds = _read(build_sr(edited))
    assert _texts(ds, "121077") == [EDITED]


def test_narrative_suggestion_and_recommendations_are_text_items(
    preliminary: Report, preliminary_sr: Dataset
) -> None:
    assert _texts(preliminary_sr, "121077") == [preliminary.conclusion]
    assert _texts(preliminary_sr, "121073") == ["Community-acquired pneumonia"] * 2
    assert _texts(preliminary_sr, "121075") == ["Clinical correlation", "Follow-up CT in 6 weeks"] * 2


def test_rejected_report_says_it_was_rejected(rejected: Report) -> None:
    ds = _read(build_sr(rejected))
    assert ds.VerificationFlag == "VERIFIED"
    comments = _texts(ds, "121106")
    assert any(text.startswith("REJECTED by the verifying clinician") for text in comments)
    assert "Checked against prior imaging." in comments


def test_long_finding_text_is_kept_whole(make_report: MakeReport) -> None:
    report = make_report(1)
    long_text = " ".join(["opacity"] * 20)
    finding = report.images[0].findings[0].model_copy(update={"description": long_text})
    image = report.images[0].model_copy(update={"findings": (finding,)})
    ds = _read(build_sr(report.model_copy(update={"images": (image,)})))
    assert _texts(ds, "121071") == [long_text]
    coded = [item for item in _items(ds) if item.ValueType == "CODE" and _name(item) == ("121071", "DCM")]
    assert len(coded[0].ConceptCodeSequence[0].CodeMeaning) == 64


def test_sr_contains_no_phi(preliminary: Report, final: Report) -> None:
    for report in (preliminary, final):
        data = build_sr(report)
        assert contains_phi(data) == []
        for day in PHI_DATES:
            assert day.encode() not in data
        assert PHI["InstitutionName"].encode() not in data


def test_same_report_gives_same_bytes_and_a_new_state_a_new_instance(
    preliminary: Report, final: Report
) -> None:
    assert build_sr(preliminary) == build_sr(preliminary)
    assert sr_sop_instance_uid(preliminary) != sr_sop_instance_uid(final)


def test_report_without_images_is_refused(make_report: MakeReport) -> None:
    with pytest.raises(InvalidRequest):
        build_sr(Report.model_validate(make_report(1).model_dump() | {"images": ()}))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy is not installed")
def test_dciodvfy_finds_no_errors(final: Report, tmp_path: Path) -> None:
    path = tmp_path / "report.dcm"
    path.write_bytes(build_sr(final))
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert "Comprehensive3DSR" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == []
