"""Structured reports: content is dropped by default and cleaned with Clean Structured Content."""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from irmsia.domain.deid import Deidentifier, DeidOptions, DeidResult
from irmsia.domain.pseudonym import Pseudonymizer
from tests.factories import PHI, EnhancedSRStorage, to_bytes

KEY = b"test-key-0123456789abcdef-irmsia"
IMAGE_UID = generate_uid()
STUDY_UID = generate_uid()


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def content(value_type: str, name: Dataset, **attributes: object) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([name])
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def make_sr() -> Dataset:
    """An Enhanced SR with identity planted in text, person names and dates."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedSRStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedSRStorage
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = PHI["PatientName"]
    ds.PatientID = PHI["PatientID"]
    ds.PatientBirthDate = PHI["PatientBirthDate"]
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.ContentDate = "20240105"
    ds.ContentTime = "101700"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([code("126000", "DCM", "Imaging Measurement Report")])
    observer = Dataset()
    observer.VerifyingObserverName = "Verifiercanary^Doctor"
    observer.VerifyingOrganization = "Canary Verifying Org"
    observer.VerificationDateTime = "20240106120000"
    ds.VerifyingObserverSequence = Sequence([observer])

    measured = Dataset()
    measured.NumericValue = "5.2"
    measured.MeasurementUnitsCodeSequence = Sequence([code("mm", "UCUM", "millimeter")])
    image_ref = Dataset()
    image_ref.ReferencedSOPClassUID = CTImageStorage
    image_ref.ReferencedSOPInstanceUID = IMAGE_UID
    deeper = content(
        "TEXT",
        code("121071", "DCM", "Finding"),
        TextValue="Second look for Canaryname, MRN PIDCANARY4711",
    )
    ds.ContentSequence = Sequence(
        [
            content(
                "TEXT",
                code("121071", "DCM", "Finding"),
                TextValue="Nodule 5 mm; discussed with Canaryname on 2024-01-05, phone 555 0199.",
            ),
            content("PNAME", code("121008", "DCM", "Person Observer Name"), PersonName=PHI["NestedName"]),
            content("DATE", code("111060", "DCM", "Study Date"), Date="20240105"),
            content("DATETIME", code("111526", "DCM", "DateTime Started"), DateTime="20240105101500"),
            content("NUM", code("410668003", "SCT", "Length"), MeasuredValueSequence=Sequence([measured])),
            content(
                "IMAGE", code("121233", "DCM", "Source image"), ReferencedSOPSequence=Sequence([image_ref])
            ),
            content("UIDREF", code("110180", "DCM", "Study Instance UID"), UID=STUDY_UID),
            content(
                "CONTAINER", code("125007", "DCM", "Measurement Group"), ContentSequence=Sequence([deeper])
            ),
        ]
    )
    return ds


def run(options: DeidOptions) -> DeidResult:
    return Deidentifier(options, KEY).deidentify(make_sr())


def test_content_tree_is_emptied_without_the_option() -> None:
    out = run(DeidOptions()).dataset
    assert len(out.ContentSequence) == 0
    assert len(out.VerifyingObserverSequence) == 0
    assert b"canary" not in to_bytes(out).lower()


def test_clean_structured_content_keeps_codes_and_measurements() -> None:
    out = run(DeidOptions(clean_structured_content=True)).dataset
    items = out.ContentSequence

    assert [item.ValueType for item in items] == [
        "TEXT",
        "PNAME",
        "DATE",
        "DATETIME",
        "NUM",
        "IMAGE",
        "UIDREF",
        "CONTAINER",
    ]
    assert items[4].ConceptNameCodeSequence[0].CodeValue == "410668003"
    assert items[4].MeasuredValueSequence[0].NumericValue == 5.2
    assert items[4].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm"


def test_clean_structured_content_cleans_names_text_and_dates() -> None:
    result = run(DeidOptions(clean_structured_content=True))
    out = result.dataset
    items = out.ContentSequence

    assert items[0].TextValue == "Nodule 5 mm; discussed with on , phone ."
    assert items[1].PersonName == "ANONYMOUS"
    assert items[2].Date == ""  # no date option: unlisted dates are zeroed
    assert items[3].DateTime == ""
    assert items[7].ContentSequence[0].TextValue == "Second look for , MRN"
    assert b"canary" not in to_bytes(out).lower()


def test_structured_dates_are_shifted_with_modified_dates() -> None:
    result = run(DeidOptions(clean_structured_content=True, retain_long_modified_dates=True))
    out = result.dataset
    assert out.ContentSequence[2].Date == out.ContentDate
    assert out.ContentSequence[2].Date not in ("", "20240105")
    assert out.ContentSequence[3].DateTime[:8] == out.ContentDate
    assert out.ContentSequence[3].DateTime[8:] == "101500"


def test_structured_references_use_the_replacement_uids() -> None:
    out = run(DeidOptions(clean_structured_content=True)).dataset
    reference = out.ContentSequence[5].ReferencedSOPSequence[0]
    image = Pseudonymizer(KEY).uid(IMAGE_UID)

    assert reference.ReferencedSOPClassUID == CTImageStorage
    assert reference.ReferencedSOPInstanceUID == image
    assert out.ContentSequence[6].UID == out.StudyInstanceUID != STUDY_UID
