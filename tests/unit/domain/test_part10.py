"""The fast Part 10 encoder writes exactly the bytes pydicom's writer writes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from irmsia.domain.deid import Deidentifier, DeidOptions
from irmsia.domain.part10 import encode_part10
from tests.factories import (
    add_phi_extras,
    make_cr,
    make_ct,
    make_multiframe_us,
    make_secondary_capture,
    to_bytes,
)
from tests.unit.domain.test_deid_structured import make_sr

KEY = b"k" * 32
REQUIRED_META = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")

# pydicom's bundled files that are complete Part 10 files (readable, with file meta), of every
# transfer syntax the fast path takes and of two it leaves to pydicom (big endian, deflated).
BUNDLED = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",
    "JPGExtended.dcm",
    "SC_rgb_small_odd.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "examples_palette.dcm",
    "examples_overlay.dcm",
    "rtplan.dcm",
    "rtstruct.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "reportsi.dcm",
    "nested_priv_SQ.dcm",
    "priv_SQ.dcm",
    "waveform_ecg.dcm",
    "empty_charset_LEI.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
)


def _pydicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _read(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)  # never the network
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(Path(str(path)), force=True)


def _deidentified(ds: Dataset, **options: bool) -> Dataset:
    return Deidentifier(DeidOptions(**options), KEY).deidentify(ds).dataset


@pytest.mark.parametrize("name", BUNDLED)
def test_a_read_file_is_written_exactly_as_pydicom_writes_it(name: str) -> None:
    ds = _read(name)
    if not all(ds.file_meta.get(keyword) for keyword in REQUIRED_META):
        pytest.skip("pydicom refuses to write a file without SOP class and instance in its file meta")
    ds.preamble = b"\0" * 128
    assert encode_part10(ds) == _pydicom_bytes(ds)


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("options", [{}, {"retain_long_modified_dates": True, "clean_descriptors": True}])
def test_a_deidentified_file_is_written_exactly_as_pydicom_writes_it(
    name: str, options: dict[str, bool]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some bundled files are deliberately odd
        out = _deidentified(_read(name), **options)
    try:
        expected = _pydicom_bytes(out)
    except AttributeError:  # no SOP Class: pydicom refuses the file, and so must the encoder
        with pytest.raises(AttributeError):
            encode_part10(out)
        return
    assert encode_part10(out) == expected


@pytest.mark.parametrize(
    "build",
    [
        lambda: add_phi_extras(make_ct()),
        lambda: make_cr(monochrome1=True),
        make_multiframe_us,
        make_secondary_capture,
        make_sr,
    ],
    ids=["ct-with-sequences-and-private", "cr", "multiframe-us", "secondary-capture", "sr"],
)
def test_objects_read_back_and_deidentified_are_written_as_pydicom_writes_them(build) -> None:  # type: ignore[no-untyped-def]
    source = dcmread(io.BytesIO(to_bytes(build())))  # undecoded elements, as ingest sees them
    out = _deidentified(source, retain_long_modified_dates=True, retain_patient_characteristics=True)
    encoded = encode_part10(out)
    assert encoded == _pydicom_bytes(out)
    again = dcmread(io.BytesIO(encoded))
    assert again.SOPInstanceUID == out.SOPInstanceUID and again.PatientIdentityRemoved == "YES"


def test_an_implicit_vr_source_is_written_implicit_and_exactly() -> None:
    ds = make_ct()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    source = dcmread(io.BytesIO(to_bytes(ds)))
    out = _deidentified(source)
    assert out.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert encode_part10(out) == _pydicom_bytes(out)


def test_big_endian_goes_through_pydicom() -> None:
    ds = _read("MR_small_bigendian.dcm")
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert encode_part10(ds) == _pydicom_bytes(ds)


def test_values_are_padded_to_even_length_like_pydicom() -> None:
    ds = make_ct()
    ds.StudyID = "ODD"  # SH, odd: a space
    ds.SeriesInstanceUID = "1.2.3"  # UI, odd: a NUL
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]  # multi-valued CS
    ds.add_new(0x00091010, "OB", b"\x01\x02\x03")  # odd OB: a NUL
    encoded = encode_part10(ds)
    assert encoded == _pydicom_bytes(ds)
    assert b"ODD " in encoded and b"1.2.3\0" in encoded and b"ORIGINAL\\PRIMARY\\AXIAL" in encoded


def test_non_ascii_text_is_encoded_by_pydicom_with_the_character_set() -> None:
    ds = make_ct()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDescription = "Thorax, Übersicht"
    encoded = encode_part10(ds)
    assert encoded == _pydicom_bytes(ds)
    assert "Übersicht".encode() in encoded


def test_raw_elements_in_another_encoding_fall_back_to_pydicom() -> None:
    ds = make_ct()
    # An undecoded element read from an implicit-VR file, in a dataset labelled explicit.
    ds._dict[Tag(0x00181050)] = RawDataElement(Tag(0x00181050), None, 4, b"1.0 ", 0, True, True)
    ds.set_original_encoding(True, True)
    assert encode_part10(ds) == _pydicom_bytes(ds)


def test_an_ordinary_deidentified_object_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without this, every equality above could pass by falling back to pydicom each time.
    from irmsia.domain import part10

    def refuse(ds: Dataset) -> bytes:
        raise AssertionError("fell back to pydicom's writer")

    out = _deidentified(dcmread(io.BytesIO(to_bytes(add_phi_extras(make_ct())))))
    expected = _pydicom_bytes(out)
    monkeypatch.setattr(part10, "_pydicom", refuse)
    assert encode_part10(out) == expected
    implicit = make_ct()
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = _deidentified(dcmread(io.BytesIO(to_bytes(implicit))))
    assert encode_part10(out)[128:132] == b"DICM"
    with pytest.raises(AssertionError, match="fell back"):
        encode_part10(_read("MR_small_bigendian.dcm"))
