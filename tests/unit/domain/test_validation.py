"""Specification of DICOM ingest validation (irmsia.domain.validation).

Every object here is built in memory from tests.factories (with planted PHI canaries) and
compressed with pydicom's encoders or imagecodecs; malformed objects are made by editing
the encoded bytes, since pydicom refuses to write most of them.
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    MPEG2MPML,
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from irmsia.domain import validation
from irmsia.domain.validation import (
    DEFAULT_TRANSFER_SYNTAXES,
    Reason,
    ValidationPolicy,
    parse_and_validate,
)
from irmsia.errors import ConfigError, InvalidDicom, PayloadTooLarge
from tests.factories import (
    PHI,
    EnhancedSRStorage,
    contains_phi,
    make_cr,
    make_ct,
    make_multiframe_us,
    make_secondary_capture,
    to_bytes,
)

STRICT = ValidationPolicy()
LENIENT = ValidationPolicy(mode="lenient")
EncapsulatedPDFStorage = "1.2.840.10008.5.1.4.1.1.104.1"
ParametricMapStorage = "1.2.840.10008.5.1.4.1.1.30"


# --- builders -----------------------------------------------------------------------------


def _reject(data: bytes, policy: ValidationPolicy = STRICT) -> InvalidDicom:
    with pytest.raises(InvalidDicom) as info:
        parse_and_validate(data, policy)
    return info.value


def _swap(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace bytes in an encoded object without changing any length."""
    assert len(old) == len(new) and old in data
    return data.replace(old, new)


def _without_file_meta(part10: bytes) -> bytes:
    """The dataset alone: drop preamble, prefix and the file meta group."""
    (group_length,) = struct.unpack_from("<L", part10, 132 + 8)
    return part10[132 + 12 + group_length :]


def _ui(tag: int, value: str) -> bytes:
    raw = value.encode("ascii")
    raw += b"\x00" * (len(raw) % 2)
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, b"UI", len(raw)) + raw


def _part10(body: bytes, **meta: str) -> bytes:
    """A Part 10 stream with a hand-built file meta group of UI elements."""
    tags = {
        "MediaStorageSOPClassUID": 0x00020002,
        "MediaStorageSOPInstanceUID": 0x00020003,
        "TransferSyntaxUID": 0x00020010,
    }
    group = b"".join(_ui(tags[keyword], value) for keyword, value in meta.items())
    length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(group))
    return bytes(128) + b"DICM" + length + group + body


def _item(payload: bytes) -> bytes:
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(payload)) + payload


def _with_raw_encapsulated_pixels(ds: Dataset, transfer_syntax: str, items: bytes) -> bytes:
    """Serialise ``ds`` with hand-made encapsulated Pixel Data (pydicom refuses bad ones)."""
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    delimiter = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return to_bytes(ds) + header + items + delimiter


def _encapsulate(ds: Dataset, transfer_syntax: str, frames: list[bytes]) -> Dataset:
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def _native(transfer_syntax: str) -> bytes:
    ds = make_ct()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    return to_bytes(ds)


def _pydicom_compressed(transfer_syntax: str, **options: Any) -> bytes:
    ds = make_ct()
    ds.compress(transfer_syntax, **options)
    return to_bytes(ds)


def _codec_compressed(
    transfer_syntax: str, encode: Callable[[np.ndarray], bytes], *, eight_bit: bool = False
) -> bytes:
    """A 12-bit CR (or an 8-bit copy) compressed with imagecodecs and encapsulated by pydicom."""
    ds = make_cr()
    pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(ds.Rows, ds.Columns)
    if eight_bit:
        pixels = (pixels >> 4).astype(np.uint8)
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
    return to_bytes(_encapsulate(ds, transfer_syntax, [encode(pixels)]))


def _rle_frame(ds: Dataset) -> bytes:
    compressed = make_ct()
    compressed.compress(RLELossless)
    assert (compressed.Rows, compressed.Columns) == (ds.Rows, ds.Columns)
    return next(generate_frames(compressed.PixelData, number_of_frames=1))


def _with_offset_table(table: bytes) -> bytes:
    ds = make_ct()
    return _with_raw_encapsulated_pixels(ds, RLELossless, _item(table) + _item(_rle_frame(ds)))


def _non_image(sop_class_uid: str, modality: str) -> Dataset:
    """A minimal object without pixel data (SR, encapsulated PDF)."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = PHI["PatientName"]
    return ds


def _structured_report() -> bytes:
    ds = _non_image(EnhancedSRStorage, "SR")
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "no acute findings"
    ds.ContentSequence = Sequence([item])
    return to_bytes(ds)


def _encapsulated_pdf() -> bytes:
    ds = _non_image(EncapsulatedPDFStorage, "DOC")
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    return to_bytes(ds)


def _parametric_map(*, short: bool = False) -> bytes:
    ds = make_ct(phi_extras=False)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ParametricMapStorage
    for keyword in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.BitsAllocated = 32
    values = np.zeros((ds.Rows, ds.Columns), dtype=np.float32).tobytes()
    ds.FloatPixelData = values[:-4] if short else values
    return to_bytes(ds)


def _edit(build: Callable[[], Dataset], change: Callable[[Dataset], object]) -> Callable[[], bytes]:
    def built() -> bytes:
        ds = build()
        change(ds)
        return to_bytes(ds)

    return built


def _deleting(keyword: str) -> Callable[[Dataset], None]:
    return lambda ds: delattr(ds, keyword)


def _setting(keyword: str, value: object) -> Callable[[Dataset], None]:
    return lambda ds: setattr(ds, keyword, value)


def _ct_with_uid(keyword: str, bad: str) -> bytes:
    """A CT whose ``keyword`` UID (and its file meta twin) is replaced by ``bad`` in the bytes."""
    placeholder = "1." + "2" * (len(bad) - 2)  # same length, valid, and unique in the bytes
    assert len(bad) % 2 == 0  # no pad byte, so the swap keeps every length
    ds = make_ct(sop_uid=placeholder if keyword == "SOPInstanceUID" else None)
    if keyword != "SOPInstanceUID":
        setattr(ds, keyword, placeholder)
    return _swap(to_bytes(ds), placeholder.encode(), bad.encode())


def _ct_with_long_uid() -> bytes:
    ds = make_ct()
    # UT carries the over-long value past pydicom's UI length check; the validator reads bytes.
    ds["StudyInstanceUID"] = DataElement(0x0020000D, "UT", "1." + "2" * 70)
    return to_bytes(ds)


def _ct_with_character_set(value: str) -> Callable[[], bytes]:
    """A CT whose SpecificCharacterSet element is rewritten, in the bytes, to hold ``value``."""

    def built() -> bytes:
        ds = make_ct()
        ds.SpecificCharacterSet = "ISO_IR 100"
        element = struct.pack("<HH2sH", 0x0008, 0x0005, b"CS", 10) + b"ISO_IR 100"
        raw = value.encode() + b" " * (len(value) % 2)
        replacement = struct.pack("<HH2sH", 0x0008, 0x0005, b"CS", len(raw)) + raw
        data = to_bytes(ds)
        assert element in data
        return data.replace(element, replacement)

    return built


def _truncate_inside(marker: bytes, offset: int) -> Callable[[], bytes]:
    def built() -> bytes:
        data = to_bytes(make_ct())
        return data[: data.index(marker) + offset]

    return built


def _rle_us() -> Dataset:
    ds = make_multiframe_us()
    ds.compress(RLELossless)
    return ds


def _sequence_with_a_delimiter_for_an_item() -> bytes:
    data = to_bytes(make_ct())
    start = data.index(b"\x08\x00\x40\x11SQ") + 12  # (0008,1140) ReferencedImageSequence
    assert data[start : start + 4] == b"\xfe\xff\x00\xe0"
    return data[:start] + b"\xfe\xff\x0d\xe0" + data[start + 4 :]


def _deeply_nested() -> bytes:
    ds = make_ct(phi_extras=False)
    inner = Dataset()
    inner.CodeMeaning = "leaf"
    for _ in range(40):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    return to_bytes(ds)


def _implicit_body_under_explicit_meta() -> bytes:
    ds = make_ct()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    body = _without_file_meta(to_bytes(ds))
    return _part10(
        body,
        MediaStorageSOPClassUID=ds.SOPClassUID,
        MediaStorageSOPInstanceUID=ds.SOPInstanceUID,
        TransferSyntaxUID=ExplicitVRLittleEndian,
    )


def _meta_without(keyword: str) -> bytes:
    ds = make_ct()
    meta = {
        "MediaStorageSOPClassUID": ds.SOPClassUID,
        "MediaStorageSOPInstanceUID": ds.SOPInstanceUID,
        "TransferSyntaxUID": ExplicitVRLittleEndian,
    }
    del meta[keyword]
    return _part10(_without_file_meta(to_bytes(ds)), **meta)


def _zero_pixel_deflated(rows: int = 256) -> bytes:
    ds = make_ct(rows=rows, columns=rows)
    ds.PixelData = bytes(len(ds.PixelData))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return to_bytes(ds)


def _policy(**changes: Any) -> ValidationPolicy:
    return ValidationPolicy(**changes)


# --- rejections, one case per kind of damage ------------------------------------------------

REJECTIONS = [
    pytest.param(lambda: b"", STRICT, Reason.EMPTY, id="empty_payload"),
    pytest.param(lambda: b"not a DICOM file at all\n" * 20, STRICT, Reason.NOT_DICOM, id="plain_text"),
    pytest.param(lambda: b"\x89PNG\r\n\x1a\n" + bytes(400), STRICT, Reason.NOT_DICOM, id="png_image"),
    pytest.param(lambda: bytes(512), LENIENT, Reason.NOT_DICOM, id="zero_bytes"),
    pytest.param(
        lambda: _without_file_meta(to_bytes(make_ct())),
        STRICT,
        Reason.MISSING_FILE_META,
        id="raw_dataset_in_strict_mode",
    ),
    pytest.param(
        lambda: _without_file_meta(to_bytes(_rle_us())),
        LENIENT,
        Reason.MISSING_FILE_META,
        id="raw_compressed_dataset_has_no_inferable_transfer_syntax",
    ),
    pytest.param(lambda: to_bytes(make_ct())[:132], STRICT, Reason.TRUNCATED, id="truncated_after_prefix"),
    pytest.param(lambda: to_bytes(make_ct())[:150], STRICT, Reason.TRUNCATED, id="truncated_in_file_meta"),
    pytest.param(
        _truncate_inside(b"\xe0\x7f\x10\x00OW", 5),
        LENIENT,
        Reason.TRUNCATED,
        id="truncated_in_element_header",
    ),
    pytest.param(lambda: to_bytes(make_ct())[:-100], LENIENT, Reason.TRUNCATED, id="truncated_in_pixel_data"),
    pytest.param(
        _truncate_inside(b"\x08\x00\x40\x11SQ", 30), LENIENT, Reason.TRUNCATED, id="truncated_in_sequence"
    ),
    pytest.param(
        lambda: to_bytes(_rle_us())[:-20],
        LENIENT,
        Reason.TRUNCATED,
        id="truncated_in_encapsulated_pixel_data",
    ),
    pytest.param(
        lambda: _native(DeflatedExplicitVRLittleEndian)[:-40],
        LENIENT,
        Reason.TRUNCATED,
        id="truncated_deflate_stream",
    ),
    pytest.param(
        lambda: _part10(
            b"\x00garbage that is not deflate" * 10, TransferSyntaxUID=DeflatedExplicitVRLittleEndian
        ),
        LENIENT,
        Reason.MALFORMED,
        id="corrupt_deflate_stream",
    ),
    pytest.param(
        lambda: _swap(to_bytes(make_ct()), b"\x08\x00\x60\x00CS", b"\x08\x00\x60\x00\x01\x02"),
        LENIENT,
        Reason.MALFORMED,
        id="invalid_value_representation",
    ),
    pytest.param(
        _implicit_body_under_explicit_meta, LENIENT, Reason.MALFORMED, id="implicit_body_under_explicit_ts"
    ),
    pytest.param(
        _sequence_with_a_delimiter_for_an_item, LENIENT, Reason.MALFORMED, id="sequence_without_items"
    ),
    pytest.param(_deeply_nested, LENIENT, Reason.MALFORMED, id="sequences_nested_too_deep"),
    *(
        pytest.param(
            _edit(make_ct, _deleting(keyword)), LENIENT, Reason.MISSING_ATTRIBUTE, id=f"missing_{keyword}"
        )
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
    ),
    pytest.param(
        _edit(make_ct, _setting("SeriesInstanceUID", "")), LENIENT, Reason.MISSING_ATTRIBUTE, id="empty_uid"
    ),
    pytest.param(
        lambda: _ct_with_uid("StudyInstanceUID", "1.2.3\\4.5.67"),
        LENIENT,
        Reason.INVALID_UID,
        id="multi_valued_uid",
    ),
    pytest.param(_ct_with_long_uid, LENIENT, Reason.INVALID_UID, id="uid_longer_than_64"),
    pytest.param(
        lambda: _swap(
            to_bytes(make_ct()), b"\x08\x00\x60\x00CS\x02\x00CT", b"\x08\x00\x60\x00CS\x02\x00c\xe9"
        ),
        LENIENT,
        Reason.INVALID_VALUE,
        id="modality_not_ascii",
    ),
    pytest.param(
        _ct_with_character_set("ISO_IR 999"), STRICT, Reason.INVALID_VALUE, id="unknown_character_set"
    ),
    pytest.param(
        _ct_with_character_set("ISO_IR 192\\ISO 2022 IR 100"),
        STRICT,
        Reason.INVALID_VALUE,
        id="stand_alone_character_set_with_extension",
    ),
    pytest.param(
        lambda: _native(ExplicitVRBigEndian),
        _policy(allowed_transfer_syntaxes=DEFAULT_TRANSFER_SYNTAXES - {ExplicitVRBigEndian}),
        Reason.UNSUPPORTED_TRANSFER_SYNTAX,
        id="big_endian_refused_by_policy",
    ),
    pytest.param(
        lambda: _swap(
            _native(ExplicitVRLittleEndian), b"1.2.840.10008.1.2.1\x00", b"1.2.840.99999.1.2.1\x00"
        ),
        LENIENT,
        Reason.UNSUPPORTED_TRANSFER_SYNTAX,
        id="unknown_transfer_syntax",
    ),
    pytest.param(
        lambda: to_bytes(_encapsulate(make_ct(), MPEG2MPML, [b"\x00\x00\x01\xb3" + bytes(60)])),
        LENIENT,
        Reason.UNSUPPORTED_TRANSFER_SYNTAX,
        id="video_transfer_syntax",
    ),
    pytest.param(
        _structured_report, _policy(require_pixel_data=True), Reason.MISSING_PIXEL_DATA, id="no_pixel_data"
    ),
    *(
        pytest.param(
            _edit(make_ct, _deleting(keyword)),
            LENIENT,
            Reason.MISSING_IMAGE_ATTRIBUTE,
            id=f"missing_{keyword}",
        )
        for keyword in ("Rows", "Columns")
    ),
    pytest.param(
        # pydicom cannot write Pixel Data without BitsAllocated, so move it to an unused tag.
        lambda: _swap(to_bytes(make_ct()), b"\x28\x00\x00\x01US", b"\x28\x00\xff\x00US"),
        LENIENT,
        Reason.MISSING_IMAGE_ATTRIBUTE,
        id="missing_BitsAllocated",
    ),
    pytest.param(_edit(make_ct, _setting("Rows", 0)), LENIENT, Reason.INVALID_DIMENSIONS, id="zero_rows"),
    pytest.param(
        _edit(make_ct, _setting("Columns", 0)), LENIENT, Reason.INVALID_DIMENSIONS, id="zero_columns"
    ),
    pytest.param(
        _edit(make_multiframe_us, _setting("NumberOfFrames", 0)),
        LENIENT,
        Reason.INVALID_DIMENSIONS,
        id="zero_frames",
    ),
    pytest.param(
        _edit(
            make_multiframe_us, lambda ds: ds.__setitem__(0x00280008, DataElement(0x00280008, "LO", "many"))
        ),
        LENIENT,
        Reason.INVALID_DIMENSIONS,
        id="frames_not_an_integer",
    ),
    pytest.param(
        _edit(make_ct, _setting("BitsStored", 17)),
        LENIENT,
        Reason.INVALID_BIT_DEPTH,
        id="bits_stored_over_allocated",
    ),
    pytest.param(
        _edit(make_ct, _setting("BitsAllocated", 12)),
        LENIENT,
        Reason.INVALID_BIT_DEPTH,
        id="bits_allocated_12",
    ),
    pytest.param(
        _edit(make_ct, _setting("PixelRepresentation", 2)),
        LENIENT,
        Reason.INVALID_VALUE,
        id="pixel_representation",
    ),
    pytest.param(
        _edit(make_ct, _setting("PhotometricInterpretation", "PURPLE")),
        LENIENT,
        Reason.UNKNOWN_PHOTOMETRIC,
        id="unknown_photometric",
    ),
    pytest.param(
        _edit(make_ct, _setting("PhotometricInterpretation", "RGB")),
        LENIENT,
        Reason.SAMPLES_MISMATCH,
        id="rgb_with_one_sample",
    ),
    pytest.param(
        _edit(make_ct, _setting("SamplesPerPixel", 3)),
        LENIENT,
        Reason.SAMPLES_MISMATCH,
        id="monochrome_with_three_samples",
    ),
    pytest.param(
        _edit(make_ct, lambda ds: setattr(ds, "PixelData", ds.PixelData[:-2])),
        LENIENT,
        Reason.PIXEL_LENGTH,
        id="native_pixel_data_too_short",
    ),
    pytest.param(
        _edit(make_multiframe_us, _setting("NumberOfFrames", 5)),
        LENIENT,
        Reason.PIXEL_LENGTH,
        id="more_frames_than_native_data",
    ),
    pytest.param(
        lambda: _parametric_map(short=True), LENIENT, Reason.PIXEL_LENGTH, id="float_pixel_data_short"
    ),
    pytest.param(
        lambda: _swap(to_bytes(_rle_us()), b"1.2.840.10008.1.2.5\x00", b"1.2.840.10008.1.2.1\x00"),
        LENIENT,
        Reason.PIXEL_ENCODING,
        id="encapsulated_pixel_data_under_native_ts",
    ),
    pytest.param(
        lambda: _swap(
            _native(ExplicitVRLittleEndian), b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.5\x00"
        ),
        LENIENT,
        Reason.PIXEL_ENCODING,
        id="native_pixel_data_under_rle_ts",
    ),
    pytest.param(
        _edit(_rle_us, _setting("NumberOfFrames", 5)),
        LENIENT,
        Reason.FRAGMENTS,
        id="fewer_fragments_than_frames",
    ),
    pytest.param(
        lambda: _with_raw_encapsulated_pixels(make_ct(), RLELossless, b""),
        LENIENT,
        Reason.FRAGMENTS,
        id="no_offset_table_item",
    ),
    pytest.param(
        lambda: _with_raw_encapsulated_pixels(
            make_ct(), RLELossless, _item(b"\x00\x00") + _item(b"\x00" * 64)
        ),
        LENIENT,
        Reason.FRAGMENTS,
        id="offset_table_length_not_multiple_of_4",
    ),
    pytest.param(
        lambda: _with_offset_table(struct.pack("<2L", 0, 0)),
        LENIENT,
        Reason.FRAGMENTS,
        id="offset_table_entry_count",
    ),
    pytest.param(
        lambda: _with_offset_table(struct.pack("<L", 4)),
        LENIENT,
        Reason.FRAGMENTS,
        id="offset_table_points_past_first_fragment",
    ),
    pytest.param(
        lambda: _with_raw_encapsulated_pixels(
            make_ct(), RLELossless, _item(b"") + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        ),
        LENIENT,
        Reason.MALFORMED,
        id="fragment_of_undefined_length",
    ),
    pytest.param(
        lambda: to_bytes(_encapsulate(make_secondary_capture(), JPEGBaseline8Bit, [b"\xff\xd8" + bytes(62)])),
        LENIENT,
        Reason.PIXEL_DECODE,
        id="corrupt_jpeg_fragment",
    ),
    pytest.param(
        lambda: to_bytes(_encapsulate(make_ct(), JPEG2000Lossless, [b"\xff\x4f\xff\x51" + bytes(60)])),
        LENIENT,
        Reason.PIXEL_DECODE,
        id="corrupt_jpeg2000_fragment",
    ),
    pytest.param(
        lambda: to_bytes(_encapsulate(make_ct(), JPEG2000MC, [b"\xff\x4f\xff\x51" + bytes(60)])),
        _policy(mode="lenient", allowed_transfer_syntaxes=DEFAULT_TRANSFER_SYNTAXES | {JPEG2000MC}),
        Reason.PIXEL_DECODE,
        id="no_decoder_for_transfer_syntax",
    ),
]


@pytest.mark.parametrize(("build", "policy", "reason"), REJECTIONS)
def test_each_kind_of_damage_is_rejected_with_its_own_reason(
    build: Callable[[], bytes], policy: ValidationPolicy, reason: Reason
) -> None:
    error = _reject(build(), policy)
    assert error.reason == reason
    assert error.detail  # a sentence, not an empty string


def test_unknown_transfer_syntax_is_not_echoed() -> None:
    data = _swap(_native(ExplicitVRLittleEndian), b"1.2.840.10008.1.2.1\x00", b"1.2.840.99999.1.2.1\x00")
    error = _reject(data)
    assert "99999" not in error.detail
    assert "unrecognised" in error.detail


# --- size limits ----------------------------------------------------------------------------


def test_payload_over_the_limit_is_refused_before_parsing() -> None:
    # Not even DICOM: only a size check that runs first can answer PayloadTooLarge here.
    with pytest.raises(PayloadTooLarge) as info:
        parse_and_validate(b"x" * 2000, _policy(max_bytes=1000))
    assert "2000" in info.value.detail and "1000" in info.value.detail


def test_payload_at_the_limit_is_accepted() -> None:
    data = to_bytes(make_ct())
    assert parse_and_validate(data, _policy(max_bytes=len(data))).summary.size == len(data)


def test_deflated_object_that_inflates_past_the_limit_is_refused() -> None:
    data = _zero_pixel_deflated()
    assert len(data) < 20_000  # zeros deflate well; the inflated dataset is over 131 kB
    with pytest.raises(PayloadTooLarge):
        parse_and_validate(data, _policy(max_bytes=20_000))


def test_compressed_frame_that_would_decode_past_the_limit_is_refused() -> None:
    ds = make_ct()
    ds.compress(RLELossless)
    ds.Rows = ds.Columns = 60_000  # 7.2 GB per decoded frame, claimed by a few kB
    with pytest.raises(PayloadTooLarge) as info:
        parse_and_validate(to_bytes(ds), _policy(decode_check=False))
    assert "frame" in info.value.detail


# --- good objects -----------------------------------------------------------------------------

GOOD = [
    pytest.param(lambda: _native(ImplicitVRLittleEndian), ImplicitVRLittleEndian, id="implicit_vr_le"),
    pytest.param(lambda: _native(ExplicitVRLittleEndian), ExplicitVRLittleEndian, id="explicit_vr_le"),
    pytest.param(lambda: _native(ExplicitVRBigEndian), ExplicitVRBigEndian, id="explicit_vr_be"),
    pytest.param(
        lambda: _native(DeflatedExplicitVRLittleEndian),
        DeflatedExplicitVRLittleEndian,
        id="deflated_explicit_le",
    ),
    pytest.param(lambda: _pydicom_compressed(RLELossless), RLELossless, id="rle_lossless"),
    pytest.param(
        lambda: _codec_compressed(
            JPEGBaseline8Bit, lambda a: imagecodecs.jpeg8_encode(a, level=90), eight_bit=True
        ),
        JPEGBaseline8Bit,
        id="jpeg_baseline",
    ),
    pytest.param(
        lambda: _codec_compressed(
            JPEGExtended12Bit, lambda a: imagecodecs.jpeg8_encode(a, level=90, bitspersample=12)
        ),
        JPEGExtended12Bit,
        id="jpeg_extended_12bit",
    ),
    pytest.param(
        lambda: _codec_compressed(
            JPEGLossless, lambda a: imagecodecs.jpeg8_encode(a, lossless=True, predictor=3)
        ),
        JPEGLossless,
        id="jpeg_lossless_process14",
    ),
    pytest.param(
        lambda: _codec_compressed(
            JPEGLosslessSV1, lambda a: imagecodecs.jpeg8_encode(a, lossless=True, predictor=1)
        ),
        JPEGLosslessSV1,
        id="jpeg_lossless_sv1",
    ),
    pytest.param(
        lambda: _codec_compressed(JPEGLSLossless, imagecodecs.jpegls_encode),
        JPEGLSLossless,
        id="jpeg_ls_lossless",
    ),
    pytest.param(
        lambda: _codec_compressed(JPEGLSNearLossless, lambda a: imagecodecs.jpegls_encode(a, level=2)),
        JPEGLSNearLossless,
        id="jpeg_ls_near_lossless",
    ),
    pytest.param(lambda: _pydicom_compressed(JPEG2000Lossless), JPEG2000Lossless, id="jpeg2000_lossless"),
    pytest.param(lambda: _pydicom_compressed(JPEG2000, j2k_cr=[10]), JPEG2000, id="jpeg2000_lossy"),
    pytest.param(
        lambda: _codec_compressed(HTJ2KLossless, imagecodecs.htj2k_encode), HTJ2KLossless, id="htj2k_lossless"
    ),
    pytest.param(
        lambda: _codec_compressed(HTJ2K, lambda a: imagecodecs.htj2k_encode(a, level=80, reversible=False)),
        HTJ2K,
        id="htj2k_lossy",
    ),
]


@pytest.mark.parametrize(("build", "transfer_syntax"), GOOD)
def test_good_image_of_every_transfer_syntax_is_accepted_strictly(
    build: Callable[[], bytes], transfer_syntax: str
) -> None:
    data = build()
    result = parse_and_validate(data, STRICT)
    summary = result.summary
    assert summary.transfer_syntax_uid == transfer_syntax
    assert summary.has_pixel_data
    assert summary.number_of_frames == 1
    assert (summary.rows, summary.columns) == (result.dataset.Rows, result.dataset.Columns)
    assert summary.tolerated == ()


def test_summary_describes_the_object() -> None:
    ds = make_ct()
    data = to_bytes(ds)
    result = parse_and_validate(data, STRICT)
    summary = result.summary
    assert summary.sop_class_uid == ds.SOPClassUID
    assert summary.sop_instance_uid == ds.SOPInstanceUID
    assert summary.study_instance_uid == ds.StudyInstanceUID
    assert summary.series_instance_uid == ds.SeriesInstanceUID
    assert summary.modality == "CT"
    assert summary.transfer_syntax_uid == ExplicitVRLittleEndian
    assert (summary.rows, summary.columns, summary.number_of_frames) == (64, 64, 1)
    assert summary.size == len(data)
    assert summary.has_file_meta and summary.has_pixel_data
    assert result.dataset.SOPInstanceUID == ds.SOPInstanceUID
    assert result.dataset.PixelData == ds.PixelData


@pytest.mark.parametrize("compress", [False, True], ids=["native", "rle"])
def test_multi_frame_summary_counts_frames(compress: bool) -> None:
    ds = make_multiframe_us(frames=3, rows=32, columns=48)
    if compress:
        ds.compress(RLELossless)
    summary = parse_and_validate(to_bytes(ds), STRICT).summary
    assert (summary.number_of_frames, summary.rows, summary.columns) == (3, 32, 48)


def test_part10_without_preamble_is_accepted_strictly() -> None:
    ds = make_ct()
    summary = parse_and_validate(to_bytes(ds, preamble=False), STRICT).summary
    assert summary.sop_instance_uid == ds.SOPInstanceUID
    assert summary.has_file_meta


@pytest.mark.parametrize(
    ("build", "modality"),
    [(_structured_report, "SR"), (_encapsulated_pdf, "DOC")],
    ids=["structured_report", "encapsulated_pdf"],
)
def test_non_image_object_is_accepted_and_marked_without_pixel_data(
    build: Callable[[], bytes], modality: str
) -> None:
    summary = parse_and_validate(build(), STRICT).summary
    assert summary.modality == modality
    assert not summary.has_pixel_data
    assert (summary.number_of_frames, summary.rows, summary.columns) == (0, None, None)


def test_odd_length_pixel_data_with_its_pad_byte_is_accepted() -> None:
    ds = make_secondary_capture()
    ds.Rows = ds.Columns = 3
    ds.PixelData = bytes(9)  # pydicom pads the odd value to 10 bytes when writing
    data = to_bytes(ds)
    assert parse_and_validate(data, STRICT).summary.rows == 3


def test_bit_packed_pixel_data_is_sized_in_bits() -> None:
    ds = make_secondary_capture()
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelData = bytes(16 * 16 // 8)
    assert parse_and_validate(to_bytes(ds), STRICT).summary.has_pixel_data


def test_native_ybr_full_422_counts_two_values_per_pixel() -> None:
    ds = make_secondary_capture()
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.PixelData = bytes(16 * 16 * 2)
    assert parse_and_validate(to_bytes(ds), STRICT).summary.has_pixel_data


def test_float_pixel_data_counts_as_pixel_data() -> None:
    summary = parse_and_validate(_parametric_map(), _policy(require_pixel_data=True)).summary
    assert summary.has_pixel_data and summary.rows == 64


# --- strict versus lenient --------------------------------------------------------------------


def _meta_naming(sop_class_uid: str | None = None, sop_instance_uid: str | None = None) -> bytes:
    """A CT whose file meta names another SOP class or instance (pydicom would fix it up)."""
    ds = make_ct()
    return _part10(
        _without_file_meta(to_bytes(ds)),
        MediaStorageSOPClassUID=sop_class_uid or ds.SOPClassUID,
        MediaStorageSOPInstanceUID=sop_instance_uid or ds.SOPInstanceUID,
        TransferSyntaxUID=ExplicitVRLittleEndian,
    )


def _meta_instance_mismatch() -> bytes:
    return _meta_naming(sop_instance_uid=generate_uid())


def _meta_class_mismatch() -> bytes:
    return _meta_naming(sop_class_uid="1.2.840.10008.5.1.4.1.1.7")


def _retired_photometric() -> bytes:
    ds = make_secondary_capture()
    ds.SamplesPerPixel = 4
    ds.PhotometricInterpretation = "CMYK"
    ds.PlanarConfiguration = 0
    ds.PixelData = bytes(16 * 16 * 4)
    return to_bytes(ds)


TOLERATED_WHEN_LENIENT = [
    pytest.param(_meta_instance_mismatch, Reason.META_MISMATCH, id="meta_sop_instance_mismatch"),
    pytest.param(_meta_class_mismatch, Reason.META_MISMATCH, id="meta_sop_class_mismatch"),
    pytest.param(
        lambda: _meta_without("MediaStorageSOPInstanceUID"),
        Reason.MISSING_ATTRIBUTE,
        id="meta_lacks_media_storage_instance",
    ),
    pytest.param(
        lambda: _ct_with_uid("SOPInstanceUID", "1.2.03.4.5.6"), Reason.INVALID_UID, id="uid_with_leading_zero"
    ),
    pytest.param(
        lambda: _ct_with_uid("SeriesInstanceUID", "1.2.3.abc.99"), Reason.INVALID_UID, id="uid_with_letters"
    ),
    pytest.param(
        lambda: _ct_with_uid("StudyInstanceUID", "1.2..3.4.567"), Reason.INVALID_UID, id="uid_empty_component"
    ),
    pytest.param(
        lambda: _swap(to_bytes(make_ct()), b"\x08\x00\x60\x00CS\x02\x00CT", b"\x08\x00\x60\x00CS\x02\x00ct"),
        Reason.INVALID_VALUE,
        id="modality_lower_case",
    ),
    pytest.param(
        _edit(make_ct, _deleting("PhotometricInterpretation")),
        Reason.MISSING_IMAGE_ATTRIBUTE,
        id="missing_photometric",
    ),
    pytest.param(_edit(make_ct, _setting("HighBit", 15)), Reason.INVALID_BIT_DEPTH, id="high_bit_mismatch"),
    pytest.param(_retired_photometric, Reason.UNKNOWN_PHOTOMETRIC, id="retired_photometric"),
    pytest.param(
        _edit(make_ct, lambda ds: setattr(ds, "PixelData", ds.PixelData + bytes(2))),
        Reason.PIXEL_LENGTH,
        id="excess_pixel_padding",
    ),
    pytest.param(lambda: _meta_without("TransferSyntaxUID"), Reason.MISSING_ATTRIBUTE, id="meta_lacks_ts"),
]


@pytest.mark.parametrize(("build", "reason"), TOLERATED_WHEN_LENIENT)
def test_strict_rejects_what_lenient_tolerates_and_records(
    build: Callable[[], bytes], reason: Reason
) -> None:
    data = build()
    strict_error = _reject(data, STRICT)
    lenient = parse_and_validate(data, LENIENT)
    assert strict_error.reason == reason
    assert reason in lenient.summary.tolerated
    assert lenient.summary.size == len(data)


@pytest.mark.parametrize(
    ("transfer_syntax", "expected"),
    [
        (ImplicitVRLittleEndian, ImplicitVRLittleEndian),
        (ExplicitVRLittleEndian, ExplicitVRLittleEndian),
        (ExplicitVRBigEndian, ExplicitVRBigEndian),
    ],
    ids=["implicit_le", "explicit_le", "explicit_be"],
)
def test_raw_dataset_without_file_meta_is_accepted_leniently_with_inferred_encoding(
    transfer_syntax: str, expected: str
) -> None:
    ds = make_ct()
    data = _without_file_meta(_raw_source(ds, transfer_syntax))
    assert _reject(data, STRICT).reason == Reason.MISSING_FILE_META
    result = parse_and_validate(data, LENIENT)
    assert result.summary.transfer_syntax_uid == expected
    assert not result.summary.has_file_meta
    assert result.summary.sop_instance_uid == ds.SOPInstanceUID
    assert Reason.MISSING_FILE_META in result.summary.tolerated


def _raw_source(ds: Dataset, transfer_syntax: str) -> bytes:
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    return to_bytes(ds)


def test_validation_never_changes_pydicom_global_settings() -> None:
    settings = pydicom.config.settings
    before = (settings.reading_validation_mode, settings.writing_validation_mode)
    data = _meta_instance_mismatch()
    parse_and_validate(data, LENIENT)
    _reject(data, STRICT)
    assert (settings.reading_validation_mode, settings.writing_validation_mode) == before


# --- pixel decoding ---------------------------------------------------------------------------


class _ExplodingDecoderLookup:
    """Stands in for pydicom's get_decoder to prove it is not consulted."""

    calls = 0

    def __call__(self, transfer_syntax: str) -> object:
        self.calls += 1
        raise AssertionError("no decoder should be looked up")


def test_native_pixel_data_is_checked_by_length_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = _ExplodingDecoderLookup()
    monkeypatch.setattr(validation, "get_decoder", lookup)
    assert parse_and_validate(to_bytes(make_ct(rows=512, columns=512)), STRICT).summary.rows == 512
    assert lookup.calls == 0


def test_decode_check_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = _ExplodingDecoderLookup()
    monkeypatch.setattr(validation, "get_decoder", lookup)
    corrupt = to_bytes(_encapsulate(make_secondary_capture(), JPEGBaseline8Bit, [b"\xff\xd8" + bytes(62)]))
    summary = parse_and_validate(corrupt, _policy(decode_check=False)).summary
    assert summary.has_pixel_data and summary.transfer_syntax_uid == JPEGBaseline8Bit
    assert lookup.calls == 0


class _UnavailableDecoder:
    is_available = False
    missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0"]


def test_missing_plugin_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "get_decoder", lambda transfer_syntax: _UnavailableDecoder())
    error = _reject(_pydicom_compressed(JPEG2000Lossless), STRICT)
    assert error.reason == Reason.PIXEL_DECODE
    assert "pylibjpeg-openjpeg" in error.detail


def test_undecodable_data_names_the_plugins_that_might_help() -> None:
    corrupt = to_bytes(_encapsulate(make_secondary_capture(), JPEGBaseline8Bit, [b"\xff\xd8" + bytes(62)]))
    error = _reject(corrupt, STRICT)
    assert error.reason == Reason.PIXEL_DECODE
    assert "cannot be decoded by the installed plugins" in error.detail
    if any(entry.startswith("gdcm") for entry in get_decoder(JPEGBaseline8Bit).missing_dependencies):
        assert "python-gdcm" in error.detail


# --- policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes", [{"mode": "paranoid"}, {"max_bytes": 0}], ids=["unknown_mode", "non_positive_limit"]
)
def test_policy_refuses_invalid_settings(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ValidationPolicy(**changes)


def test_default_policy_is_strict_and_accepts_big_endian() -> None:
    policy = ValidationPolicy()
    assert policy.strict
    assert ExplicitVRBigEndian in policy.allowed_transfer_syntaxes
    assert not ValidationPolicy(mode="lenient").strict


def test_no_error_message_echoes_patient_data_or_uids() -> None:
    cases = [(case.values[0], case.values[1]) for case in REJECTIONS]
    cases += [(case.values[0], STRICT) for case in TOLERATED_WHEN_LENIENT]
    messages = []
    for build, policy in cases:
        with pytest.raises(InvalidDicom) as info:
            parse_and_validate(build(), policy)
        messages.append(str(info.value))
    with pytest.raises(PayloadTooLarge) as too_large:
        parse_and_validate(to_bytes(make_ct()), _policy(max_bytes=100))
    messages.append(str(too_large.value))
    assert len(messages) == len(REJECTIONS) + len(TOLERATED_WHEN_LENIENT) + 1
    for message in messages:
        assert contains_phi(message) == [], message
        assert not re.search(r"\d+(\.\d+){2,}", message), message  # nothing shaped like a UID


def test_rle_segment_that_overruns_its_frame_does_not_crash_validation() -> None:
    # pylibjpeg-rle panics (a BaseException) on this frame; pydicom's decoder warns instead.
    ds = make_ct()
    ds.compress(RLELossless)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    frame[64] = 0x81  # the first run of segment 1 now replicates 128 bytes: past the frame's end
    ds.PixelData = encapsulate([bytes(frame)])
    with pytest.warns(UserWarning, match="padding"):
        summary = parse_and_validate(to_bytes(ds), STRICT).summary
    assert summary.transfer_syntax_uid == RLELossless


def test_random_damage_yields_invalid_dicom_never_another_error() -> None:
    rng = random.Random(20240105)
    seeds = [
        to_bytes(make_ct()),
        to_bytes(_rle_us()),
        _pydicom_compressed(JPEG2000Lossless),
        _structured_report(),
    ]
    outcomes = set()
    for _ in range(300):
        data = bytearray(rng.choice(seeds))
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(min(len(data), 1500))] = rng.randrange(256)
        try:
            parse_and_validate(bytes(data), STRICT)
            outcomes.add("accepted")
        except InvalidDicom as error:
            outcomes.add(error.reason)
    assert Reason.TRUNCATED in outcomes and Reason.MALFORMED in outcomes
