"""De-identification of datasets: no canary survives, options do what they say, and
pseudonyms, UIDs and date shifts stay consistent across files of one patient."""

from __future__ import annotations

from datetime import date

import pytest
from pydicom import config
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import STR_VR, validate_value

from irmsia.domain.deid import (
    IMPLEMENTATION_CLASS_UID,
    Deidentifier,
    DeidOptions,
    DeidResult,
)
from irmsia.domain.deid_profile import Action, SafePrivateAttribute, SafePrivateList
from irmsia.domain.pseudonym import Pseudonymizer
from irmsia.errors import ConfigError, DeidentificationError
from tests.factories import PHI, PHI_DATES, contains_phi, make_ct, to_bytes

KEY = b"test-key-0123456789abcdef-irmsia"
ALL_CLEANING = DeidOptions(
    clean_descriptors=True,
    clean_structured_content=True,
    clean_graphics=True,
    retain_long_modified_dates=True,
    retain_patient_characteristics=True,
)


def deidentify(ds: Dataset, options: DeidOptions | None = None, **kwargs: object) -> DeidResult:
    return Deidentifier(options or DeidOptions(), KEY, **kwargs).deidentify(ds)  # type: ignore[arg-type]


def all_elements(ds: Dataset) -> list[DataElement]:
    found = []
    for elem in ds:
        found.append(elem)
        if elem.VR == "SQ":
            for item in elem.value:
                found.extend(all_elements(item))
    return found


def shifted(text: str, days: int) -> str:
    moved = date(int(text[:4]), int(text[4:6]), int(text[6:8])).toordinal() + days
    return date.fromordinal(moved).strftime("%Y%m%d")


# --- No identity survives ---------------------------------------------------------------


@pytest.mark.parametrize("options", [DeidOptions(), ALL_CLEANING], ids=["basic", "all-cleaning-options"])
def test_no_canary_survives_in_the_serialised_output(options: DeidOptions) -> None:
    blob = to_bytes(deidentify(make_ct(), options).dataset)

    assert contains_phi(blob) == []
    for original_date in PHI_DATES:
        assert original_date.encode() not in blob
    assert b"CANARY" not in blob.upper()


def test_person_names_in_unexpected_attributes_do_not_survive() -> None:
    ds = make_ct()
    ds.EvaluatorName = "Evalcanary^Unlisted"  # PN not in Table E.1-1
    ds.PatientBirthDateInAlternativeCalendar = "CANARYCALENDAR"  # unlisted, names the patient
    ds.add_new(0x00089990, "LO", "CANARYUNKNOWNTAG")  # public group, unknown to the dictionary
    issuer = Dataset()
    issuer.UniversalEntityID = "CANARYISSUER"
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([issuer])
    inner = Dataset()
    inner.add_new(0x00142006, "PN", "Deepcanary^Person")
    middle = Dataset()
    middle.ReferencedSeriesSequence = Sequence([inner])
    ds.ReferencedStudySequence = Sequence()
    ds.SourceImageSequence = Sequence([middle])

    blob = to_bytes(deidentify(ds).dataset)

    assert b"canary" not in blob.lower()


def test_identifying_attributes_are_handled_at_every_depth() -> None:
    deep = Dataset()
    deep.PatientName = PHI["NestedName"]
    deep.OtherPatientIDs = PHI["OtherPatientIDs"]
    deep.StudyDate = "20240105"
    deep.InstitutionName = PHI["InstitutionName"]
    level2 = Dataset()
    level2.ReferencedSeriesSequence = Sequence([deep])
    level1 = Dataset()
    level1.ReferencedSeriesSequence = Sequence([level2])
    ds = make_ct(phi_extras=False)
    ds.ReferencedInstanceSequence = Sequence([level1])

    out = deidentify(ds).dataset
    leaf = out.ReferencedInstanceSequence[0].ReferencedSeriesSequence[0].ReferencedSeriesSequence[0]

    assert leaf.PatientName == ""
    assert "OtherPatientIDs" not in leaf
    assert leaf.StudyDate == ""
    assert leaf.InstitutionName == ""


def test_private_attributes_are_removed_at_every_depth_by_default() -> None:
    ds = make_ct()
    item = Dataset()
    block = item.private_block(0x0011, "NESTED CREATOR", create=True)
    block.add_new(0x01, "LO", "CANARYNESTEDPRIVATE")
    ds.ReferencedSeriesSequence = Sequence([item])

    out = deidentify(ds).dataset

    assert not any(elem.tag.is_private for elem in all_elements(out))


def test_overlays_and_curves_are_removed_by_default() -> None:
    ds = make_ct()
    ds.add_new(0x60000010, "US", 64)
    ds.add_new(0x60003000, "OW", b"\x01" * 512)
    ds.add_new(0x60024000, "LT", "Overlay note canaryoverlay")
    ds.add_new(0x50000005, "US", 2)

    out = deidentify(ds).dataset

    assert not [elem for elem in out if elem.tag.group & 0xFF00 in (0x5000, 0x6000)]


# --- The input is left alone, the output is valid ----------------------------------------


def test_input_dataset_is_not_modified() -> None:
    ds = make_ct()
    before = to_bytes(ds)

    out = deidentify(ds).dataset
    out.ImageType.append("DERIVED")
    out.PixelData = b"\0" * len(out.PixelData)

    assert to_bytes(ds) == before


def test_pixel_data_is_passed_through_without_decoding_or_copying() -> None:
    ds = make_ct()
    out = deidentify(ds).dataset
    assert out.PixelData is ds.PixelData


def test_every_output_value_is_valid_for_its_vr() -> None:
    ds = make_ct()
    ds.ContentSequence = Sequence([Dataset()])
    for options in (DeidOptions(), ALL_CLEANING):
        out = deidentify(ds, options).dataset
        for elem in all_elements(out) + list(out.file_meta):
            if elem.VR == "SQ":
                continue
            values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
            for value in values:
                validate_value(elem.VR, str(value) if elem.VR in STR_VR else value, config.RAISE)


def test_mutually_exclusive_date_options_are_refused() -> None:
    with pytest.raises(ConfigError):
        DeidOptions(retain_long_full_dates=True, retain_long_modified_dates=True)


# --- Consistency -------------------------------------------------------------------------


def test_same_patient_with_differently_spelled_names_gets_same_pseudonym_uids_and_shift() -> None:
    study_uid = generate_uid()
    first = make_ct(patient_name="Canaryname^Zelda^Q", study_uid=study_uid)
    second = make_ct(patient_name="CANARYNAME^ZELDA", study_uid=study_uid)
    options = DeidOptions(retain_long_modified_dates=True)

    one, two = deidentify(first, options), deidentify(second, options)

    assert one.pseudonym == two.pseudonym
    assert one.dataset.PatientID == two.dataset.PatientID == one.pseudonym
    assert one.dataset.PatientName == one.pseudonym
    assert one.dataset.StudyInstanceUID == two.dataset.StudyInstanceUID != study_uid
    assert one.dataset.SOPInstanceUID != two.dataset.SOPInstanceUID
    assert one.identity.date_shift_days == two.identity.date_shift_days
    assert one.dataset.StudyDate == two.dataset.StudyDate
    assert one.dataset.AccessionNumber == two.dataset.AccessionNumber == one.identity.pseudonymised_accession


def test_different_patients_get_different_pseudonyms() -> None:
    one = deidentify(make_ct(patient_id="PID-1"))
    two = deidentify(make_ct(patient_id="PID-2"))
    assert one.pseudonym != two.pseudonym


def test_uids_are_the_same_from_separately_built_deidentifiers() -> None:
    ds = make_ct()
    first = Deidentifier(DeidOptions(), KEY).deidentify(ds).dataset
    second = Deidentifier(DeidOptions(), bytes(KEY)).deidentify(ds).dataset
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID


def test_uids_are_replaced_with_keyed_uuid_derived_uids() -> None:
    ds = make_ct()
    out = deidentify(ds).dataset
    expected = Pseudonymizer(KEY).uid(ds.SOPInstanceUID)
    assert out.SOPInstanceUID == expected
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert out[keyword].value != ds[keyword].value
        assert out[keyword].value.startswith("2.25.")
        assert len(out[keyword].value) <= 64


def test_uid_root_is_used_for_replacement_uids() -> None:
    out = deidentify(make_ct(), uid_root="1.2.826.0.1.3680043.10.99").dataset
    assert out.SOPInstanceUID.startswith("1.2.826.0.1.3680043.10.99.")


def test_references_inside_and_across_datasets_stay_consistent() -> None:
    ct = make_ct()
    derived = make_ct(phi_extras=False, study_uid=ct.StudyInstanceUID)
    source = Dataset()
    source.ReferencedSOPClassUID = CTImageStorage
    source.ReferencedSOPInstanceUID = ct.SOPInstanceUID
    derived.SourceImageSequence = Sequence([source])
    roi = Dataset()
    roi.ReferencedFrameOfReferenceUID = ct.FrameOfReferenceUID
    derived.ReferencedFrameOfReferenceSequence = Sequence([roi])
    derived.SourceFrameOfReferenceUID = ct.FrameOfReferenceUID  # unlisted UID attribute

    out_ct = deidentify(ct).dataset
    out_derived = deidentify(derived).dataset

    assert out_ct.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out_ct.SOPInstanceUID
    assert out_derived.SourceImageSequence[0].ReferencedSOPInstanceUID == out_ct.SOPInstanceUID
    ref = out_derived.ReferencedFrameOfReferenceSequence[0].ReferencedFrameOfReferenceUID
    assert ref == out_ct.FrameOfReferenceUID
    assert out_derived.SourceFrameOfReferenceUID == out_ct.FrameOfReferenceUID


def test_well_known_and_class_uids_are_never_replaced() -> None:
    ds = make_ct()
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    code.CodingSchemeUID = "1.2.840.10008.2.16.4"
    ds.ProcedureCodeSequence = Sequence([code])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.840.10008.1.4.1.1"  # well-known

    out = deidentify(ds).dataset

    assert out.SOPClassUID == CTImageStorage
    assert out.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.840.10008.1.4.1.1"
    assert out.ProcedureCodeSequence[0].CodingSchemeUID == "1.2.840.10008.2.16.4"
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_nested_patient_id_gets_the_same_pseudonym_as_the_top_level() -> None:
    ds = make_ct(phi_extras=False)
    member = Dataset()
    member.PatientID = " " + PHI["PatientID"].lower()
    ds.SourcePatientGroupIdentificationSequence = Sequence([member])

    result = deidentify(ds)

    assert result.dataset.SourcePatientGroupIdentificationSequence[0].PatientID == result.pseudonym


def test_missing_patient_id_falls_back_to_name_and_birth_date() -> None:
    with_id = make_ct(patient_id="")
    same_person = make_ct(patient_id="", patient_name="CANARYNAME^ZELDA^Q")
    result = deidentify(with_id)
    assert result.pseudonym == deidentify(same_person).pseudonym
    assert result.dataset.PatientID == result.pseudonym


# --- Vault record and actions ------------------------------------------------------------


def test_identity_record_holds_the_originals_but_never_shows_them() -> None:
    result = deidentify(make_ct(), DeidOptions(retain_long_modified_dates=True))
    identity = result.identity

    assert identity.patient_name == PHI["PatientName"]
    assert identity.patient_id == PHI["PatientID"]
    assert identity.patient_birth_date == PHI["PatientBirthDate"]
    assert identity.accession_number == PHI["AccessionNumber"]
    assert identity.pseudonymised_accession == result.dataset.AccessionNumber
    assert identity.date_shift_days is not None and -365 <= identity.date_shift_days <= -1
    assert contains_phi(repr(identity)) == []
    assert contains_phi(repr(result)) == []
    assert str(identity.date_shift_days) not in repr(identity).replace(identity.pseudonym, "")


def test_actions_name_attributes_but_never_values() -> None:
    ds = make_ct()
    result = deidentify(ds, ALL_CLEANING)
    text = repr(result.actions)

    assert contains_phi(text) == []
    assert ds.SOPInstanceUID not in text
    assert result.dataset.SOPInstanceUID not in text
    by_keyword = {(a.path, a.keyword): a.action for a in result.actions}
    assert by_keyword[("", "PatientName")] is Action.PSEUDONYM
    assert by_keyword[("", "StudyInstanceUID")] is Action.UID
    assert by_keyword[("", "OtherPatientIDs")] is Action.REMOVE
    assert by_keyword[("ReferencedImageSequence[0]", "ReferencedSOPInstanceUID")] is Action.UID
    assert by_keyword[("file_meta", "SourceApplicationEntityTitle")] is Action.REMOVE


# --- File meta, preamble and the de-identification record --------------------------------


def test_file_meta_and_preamble_are_rewritten() -> None:
    ds = make_ct()
    ds.preamble = b"CANARYPREAMBLE".ljust(128, b"!")

    out = deidentify(ds).dataset
    blob = to_bytes(out)

    assert blob[:128] == b"\0" * 128
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert out.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert out.file_meta.ImplementationVersionName == "IRMSIA"
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert b"CANARYIMPL" not in blob
    assert b"CANARYAE" not in blob


def test_basic_profile_is_recorded_in_the_dataset() -> None:
    out = deidentify(make_ct()).dataset

    assert out.PatientIdentityRemoved == "YES"
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert all(item.CodingSchemeDesignator == "DCM" for item in out.DeidentificationMethodCodeSequence)
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert all(len(value) <= 64 for value in out.DeidentificationMethod)


def test_every_option_is_recorded_with_its_code() -> None:
    options = DeidOptions(
        retain_safe_private=True,
        retain_uids=True,
        retain_device_identity=True,
        retain_institution_identity=True,
        retain_patient_characteristics=True,
        retain_long_modified_dates=True,
        clean_descriptors=True,
        clean_structured_content=True,
        clean_graphics=True,
    )
    out = Deidentifier(options, KEY).deidentify(make_ct(), pixels_cleaned=True).dataset

    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert codes == {f"1131{n:02d}" for n in (0, 1, 3, 4, 5, 7, 8, 9, 10, 11, 12)}
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert out.BurnedInAnnotation == "NO"
    assert "Retain UIDs Option" in out.DeidentificationMethod
    assert all(len(value) <= 64 for value in out.DeidentificationMethod)


def test_previous_deidentification_record_is_replaced() -> None:
    ds = make_ct()
    ds.DeidentificationMethod = "CANARYOLDMETHOD"
    out = deidentify(ds, DeidOptions(retain_long_full_dates=True)).dataset
    assert out.DeidentificationMethod[0] == "IRMSIA"
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


# --- Each option changes what it should ---------------------------------------------------


def test_retain_uids_keeps_original_uids() -> None:
    ds = make_ct()
    out = deidentify(ds, DeidOptions(retain_uids=True)).dataset
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    assert out.StudyInstanceUID == ds.StudyInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID


def test_retain_device_identity_keeps_device_attributes_only() -> None:
    out = deidentify(make_ct(), DeidOptions(retain_device_identity=True)).dataset
    assert out.StationName == PHI["StationName"]
    assert out.DeviceSerialNumber == PHI["DeviceSerialNumber"]
    assert out.InstitutionName == ""


def test_retain_institution_identity_keeps_institution_attributes_only() -> None:
    out = deidentify(make_ct(), DeidOptions(retain_institution_identity=True)).dataset
    assert out.InstitutionName == PHI["InstitutionName"]
    assert out.InstitutionAddress == PHI["InstitutionAddress"]
    assert out.StationName == ""


def test_retain_patient_characteristics_keeps_sex_and_age() -> None:
    plain = deidentify(make_ct()).dataset
    kept = deidentify(make_ct(), DeidOptions(retain_patient_characteristics=True)).dataset
    assert plain.PatientSex == ""
    assert "PatientAge" not in plain
    assert kept.PatientSex == "F"
    assert kept.PatientAge == "083Y"
    assert kept.PatientBirthDate == ""


def test_retain_full_dates_keeps_dates_and_times_but_not_the_birth_date() -> None:
    out = deidentify(make_ct(), DeidOptions(retain_long_full_dates=True)).dataset
    assert out.StudyDate == "20240105"
    assert out.AcquisitionDate == "20240106"
    assert out.StudyTime == "101500"
    assert out.PatientBirthDate == ""


def test_without_date_options_dates_follow_the_table() -> None:
    out = deidentify(make_ct()).dataset
    assert out.StudyDate == ""  # Z
    assert out.AcquisitionDate == ""  # X/Z
    assert out.SeriesDate == "19000101"  # X/D: a dummy, never the original


def test_modified_dates_shift_every_date_by_the_patient_offset() -> None:
    ds = make_ct()
    ds.AcquisitionDateTime = "20240106093000.5+0100"
    ds.DateOfLastCalibration = "20231231"  # an unlisted DA
    result = deidentify(ds, DeidOptions(retain_long_modified_dates=True))
    out, days = result.dataset, result.identity.date_shift_days
    assert days is not None

    assert out.StudyDate == shifted("20240105", days)
    assert out.AcquisitionDate == shifted("20240106", days)
    assert out.SeriesDate == shifted("20240105", days)
    assert out.AcquisitionDateTime == shifted("20240106", days) + "093000.5+0100"
    assert out.DateOfLastCalibration == shifted("20231231", days)
    assert out.StudyTime == "101500"  # only whole days move
    assert out.PatientBirthDate == ""  # Z in every option column
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


@pytest.mark.parametrize(
    ("vr", "original", "as_full_date", "precision"),
    [
        ("DA", "2024.01.05", "20240105", 8),  # ACR-NEMA style
        ("DT", "20240105", "20240105", 8),
        ("DT", "202401", "20240101", 6),  # reduced precision keeps its precision
        ("DT", "2024", "20240101", 4),
    ],
)
def test_unusual_date_forms_are_shifted(vr: str, original: str, as_full_date: str, precision: int) -> None:
    ds = make_ct(phi_extras=False)
    tag = 0x00080020 if vr == "DA" else 0x0008002A
    ds.add(DataElement(tag, vr, original, validation_mode=config.IGNORE))

    result = deidentify(ds, DeidOptions(retain_long_modified_dates=True))

    days = result.identity.date_shift_days
    assert days is not None
    assert result.dataset[tag].value == shifted(as_full_date, days)[:precision]


@pytest.mark.parametrize("bad", ["2024-01-05", "20241305", "yesterday"])
def test_unparseable_dates_are_blanked_not_kept(bad: str) -> None:
    ds = make_ct(phi_extras=False)
    ds.add(DataElement(0x00080020, "DA", bad, validation_mode=config.IGNORE))
    out = deidentify(ds, DeidOptions(retain_long_modified_dates=True)).dataset
    assert out.StudyDate == ""


def test_clean_descriptors_scrubs_short_text_and_replaces_free_text() -> None:
    ds = make_ct()
    ds.ProtocolName = "CHEST Canaryname 555-0199-12"
    out = deidentify(ds, DeidOptions(clean_descriptors=True)).dataset

    assert out.StudyDescription == "CT CHEST for"
    assert out.SeriesDescription == "AXIAL 5mm"
    assert out.ProtocolName == "CHEST"
    assert out.ImageComments == "REMOVED"
    assert out.PatientComments == "REMOVED"


def test_descriptors_are_removed_without_clean_descriptors() -> None:
    out = deidentify(make_ct()).dataset
    assert "StudyDescription" not in out
    assert "SeriesDescription" not in out
    assert "ImageComments" not in out


def _private_dataset() -> Dataset:
    ds = make_ct()
    safe = ds.private_block(0x0019, "ACME SAFE", create=True)
    safe.add_new(0x23, "DS", "1.5")
    safe.add_new(0x24, "LO", "CANARYUNSAFEVALUE")
    return ds


def test_retain_safe_private_keeps_only_allow_listed_elements() -> None:
    safe_list = SafePrivateList([SafePrivateAttribute(0x0019, "ACME SAFE", 0x23, "DS", "Table Speed")])

    out = deidentify(
        _private_dataset(), DeidOptions(retain_safe_private=True), safe_private=safe_list
    ).dataset

    kept = {elem.tag: elem.value for elem in out if elem.tag.is_private}
    assert kept == {0x00190010: "ACME SAFE", 0x00191023: "1.5"}
    assert b"canary" not in to_bytes(out).lower()


def test_safe_private_elements_go_without_the_option() -> None:
    safe_list = SafePrivateList([SafePrivateAttribute(0x0019, "ACME SAFE", 0x23, "DS", "Table Speed")])
    out = deidentify(_private_dataset(), safe_private=safe_list).dataset
    assert not [elem for elem in out if elem.tag.is_private]


def test_clean_graphics_keeps_overlays_and_cleans_their_text() -> None:
    ds = make_ct()
    ds.add_new(0x60000010, "US", 64)
    ds.add_new(0x60003000, "OW", b"\x01" * 512)
    ds.add_new(0x60004000, "LT", "Overlay note canaryoverlay")
    ds.add_new(0x60001500, "LO", "Label for Canaryname")

    out = deidentify(ds, DeidOptions(clean_graphics=True)).dataset

    assert out[0x60000010].value == 64
    assert out[0x60003000].value == b"\x01" * 512
    assert out[0x60004000].value == "REMOVED"
    assert out[0x60001500].value == "Label for"


def test_graphic_annotation_text_is_cleaned_with_clean_graphics_and_dropped_without() -> None:
    ds = make_ct()
    text = Dataset()
    text.UnformattedTextValue = "R Canaryname"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([annotation])

    cleaned = deidentify(ds, DeidOptions(clean_graphics=True)).dataset
    basic = deidentify(ds).dataset

    assert cleaned.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue == "R"
    assert len(basic.GraphicAnnotationSequence) == 0


# --- Fail closed --------------------------------------------------------------------------


def test_unexpected_error_raises_deidentification_error_without_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Pseudonymizer, original: str, root: str = "2.25") -> str:
        raise ValueError(f"cannot map {original} for {PHI['PatientName']}")

    monkeypatch.setattr(Pseudonymizer, "uid", broken)
    ds = make_ct()

    with pytest.raises(DeidentificationError) as raised:
        deidentify(ds)

    message = str(raised.value)
    assert "(0008,0018)" in message
    assert contains_phi(message) == []
    assert ds.SOPInstanceUID not in message
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_malformed_element_fails_closed_naming_only_its_tag() -> None:
    ds = make_ct()
    ds._dict[Tag(0x00280010)] = RawDataElement(Tag(0x00280010), "US", 3, b"\x01\x02\x03", 0, False, True)

    with pytest.raises(DeidentificationError) as raised:
        deidentify(ds)

    assert "(0028,0010)" in str(raised.value)
    assert raised.value.code == "deidentification_failed"


# --- Datasets as they arrive from readers -------------------------------------------------


def test_dataset_without_file_meta_gets_complete_file_meta() -> None:
    ds = make_ct()
    del ds.file_meta

    out = deidentify(ds).dataset

    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert to_bytes(out)[:128] == b"\0" * 128


def test_removed_private_element_is_never_read() -> None:
    ds = make_ct()
    # A private element whose bytes cannot be decoded: removing it must not need them.
    ds._dict[Tag(0x00991002)] = RawDataElement(Tag(0x00991002), "US", 3, b"\x01\x02\x03", 0, False, True)

    out = deidentify(ds).dataset

    assert Tag(0x00991002) not in out


def test_person_name_stored_with_unknown_vr_is_still_treated_as_a_name() -> None:
    ds = make_ct()
    value = b"Uncanary^Person "
    ds._dict[Tag(0x00142006)] = RawDataElement(Tag(0x00142006), "UN", len(value), value, 0, False, True)

    out = deidentify(ds).dataset

    assert out[0x00142006].value == ""
    assert b"uncanary" not in to_bytes(out).lower()


def test_made_up_public_tags_are_removed_and_do_not_grow_what_the_deidentifier_remembers() -> None:
    # A long-running server meets every tag an uploader invents: only dictionary tags may be
    # remembered (keywords, decisions), or a stream of made-up tags would grow memory for ever.
    from irmsia.domain import deid as deid_module

    deidentifier = Deidentifier(DeidOptions(), KEY)
    deidentifier.deidentify(make_ct())
    keywords_before = len(deid_module._KEYWORDS)
    decisions_before = len(deidentifier._rules._memo)
    for batch in range(3):
        ds = make_ct()
        for element in range(200):
            tag = 0x00A00000 | (batch * 0x1000 + element + 0x10)  # even group: public, yet unknown
            assert keyword_for_tag(tag) == ""
            ds.add_new(tag, "LO", "CANARYMADEUP")
        result = deidentifier.deidentify(ds)
        assert not any(int(elem.tag) >> 16 == 0x00A0 for elem in result.dataset)
        assert not contains_phi(to_bytes(result.dataset), ["CANARYMADEUP"])
    assert len(deid_module._KEYWORDS) == keywords_before
    assert len(deidentifier._rules._memo) == decisions_before
