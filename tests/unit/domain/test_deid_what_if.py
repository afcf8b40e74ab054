"""what_if: the planned action for each attribute present, without any value."""

from __future__ import annotations

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from irmsia.domain.deid import Deidentifier, DeidOptions, what_if
from irmsia.domain.deid_profile import Action
from irmsia.errors import DeidentificationError
from tests.factories import PHI, contains_phi, make_ct

KEY = b"test-key-0123456789abcdef-irmsia"


def count_elements(ds: object) -> int:
    total = 0
    for elem in ds:  # type: ignore[attr-defined]
        total += 1
        if elem.VR == "SQ":
            total += sum(count_elements(item) for item in elem.value)
    return total


def test_what_if_lists_every_attribute_present_with_its_path() -> None:
    ds = make_ct()
    planned = what_if(ds, DeidOptions())

    # The two attributes inside the emptied Person Identification Code Sequence go with it
    # and are not walked.
    assert len(planned) == count_elements(ds) + len(ds.file_meta) - 2
    assert not [a for a in planned if "PersonIdentificationCodeSequence[" in a.path]
    nested = [a for a in planned if a.path == "ReferencedImageSequence[0]"]
    assert {a.keyword for a in nested} == {
        "ReferencedSOPClassUID",
        "ReferencedSOPInstanceUID",
        "PersonIdentificationCodeSequence",
    }


def test_what_if_never_shows_a_value() -> None:
    ds = make_ct()
    planned = what_if(ds, DeidOptions(clean_descriptors=True, retain_long_modified_dates=True))
    text = repr(planned) + " ".join(a.tag_text + a.reason for a in planned)

    assert contains_phi(text) == []
    for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
        assert uid not in text
    assert "20240105" not in text


def test_what_if_matches_what_deidentify_does() -> None:
    ds = make_ct()
    options = DeidOptions(retain_device_identity=True, clean_descriptors=True)

    planned = what_if(ds, options)
    applied = Deidentifier(options, KEY).deidentify(ds).actions

    assert planned == list(applied)


def test_what_if_reflects_the_options() -> None:
    ds = make_ct()
    planned = what_if(ds, DeidOptions())
    basic = {a.keyword: a.action for a in planned if not a.path}
    retained = {
        a.keyword: a.action for a in what_if(ds, DeidOptions(retain_device_identity=True)) if not a.path
    }
    private = [a.action for a in planned if Tag(a.tag).is_private]

    assert basic["StationName"] is Action.ZERO
    assert retained["StationName"] is Action.KEEP
    assert basic["PatientID"] is Action.PSEUDONYM
    assert private == [Action.REMOVE, Action.REMOVE]


def test_what_if_fails_closed_without_values() -> None:
    ds = make_ct()
    ds._dict[Tag(0x00280010)] = RawDataElement(Tag(0x00280010), "US", 3, b"\x01\x02\x03", 0, False, True)
    with pytest.raises(DeidentificationError) as raised:
        what_if(ds, DeidOptions())
    assert "(0028,0010)" in str(raised.value)
    assert PHI["PatientID"] not in str(raised.value)
