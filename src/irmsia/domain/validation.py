"""Validation of incoming DICOM objects before ingest.

``parse_and_validate(data, policy)`` turns the bytes of one uploaded object into a parsed
pydicom ``Dataset`` plus a ``DicomSummary``, or raises:

* ``PayloadTooLarge`` when the bytes exceed ``policy.max_bytes`` (checked before parsing;
  the inflated size of a deflated object is bounded by the same limit);
* ``InvalidDicom`` whose ``reason`` is one of the ``Reason`` tokens below.

Every ``detail`` names the problem with attribute keywords and sizes only; no value read
from the object (UIDs, names, free text) is ever echoed.

The bytes are first walked element by element (headers and lengths only, no value
conversion) before pydicom parses them. pydicom's reader is deliberately forgiving: it
keeps a truncated value short, drops a torn trailing header and warns where it guesses,
so truncation and structural damage are detected here. It also means pydicom's
process-global validation settings never need changing: strictness is the per-call
``ValidationPolicy``, and the values checked (UIDs, Modality, image attributes) are read
from the raw bytes rather than through pydicom's value conversion.

Native pixel data is checked by length only; compressed pixel data has its fragment
structure checked and, when ``policy.decode_check`` is set, its first frame decoded.
"""

from __future__ import annotations

import io
import itertools
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydicom import dcmread
from pydicom.charset import STAND_ALONE_ENCODINGS, python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from irmsia.errors import ConfigError, InvalidDicom, PayloadTooLarge

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TRANSFER_SYNTAXES",
    "DicomSummary",
    "Reason",
    "ValidatedObject",
    "ValidationPolicy",
    "parse_and_validate",
]


class Reason(StrEnum):
    """Stable ``InvalidDicom.reason`` tokens raised by this module."""

    EMPTY = "empty"
    NOT_DICOM = "not_dicom"
    MISSING_FILE_META = "missing_file_meta"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    MISSING_ATTRIBUTE = "missing_attribute"
    INVALID_VALUE = "invalid_value"
    INVALID_UID = "invalid_uid"
    META_MISMATCH = "meta_mismatch"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    MISSING_PIXEL_DATA = "missing_pixel_data"
    MISSING_IMAGE_ATTRIBUTE = "missing_image_attribute"
    INVALID_DIMENSIONS = "invalid_dimensions"
    INVALID_BIT_DEPTH = "invalid_bit_depth"
    UNKNOWN_PHOTOMETRIC = "unknown_photometric"
    SAMPLES_MISMATCH = "samples_mismatch"
    PIXEL_ENCODING = "pixel_encoding"
    PIXEL_LENGTH = "pixel_length"
    FRAGMENTS = "fragments"
    PIXEL_DECODE = "pixel_decode"


DEFAULT_MAX_BYTES = 512 * 1024 * 1024

# Explicit VR Big Endian was retired in 2004 but still turns up in old archives; pydicom
# reads it natively, so it is accepted by default. Drop it from the policy to refuse it.
DEFAULT_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
        JPEG2000Lossless,
        JPEG2000,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
        HTJ2K,
    }
)

# What to install when pydicom has no working plugin for a compressed transfer syntax.
_DECODER_HINTS: Mapping[str, str] = {
    JPEGBaseline8Bit: "pylibjpeg with pylibjpeg-libjpeg, or Pillow",
    JPEGExtended12Bit: "pylibjpeg with pylibjpeg-libjpeg, or Pillow",
    JPEGLossless: "pylibjpeg with pylibjpeg-libjpeg",
    JPEGLosslessSV1: "pylibjpeg with pylibjpeg-libjpeg",
    JPEGLSLossless: "pylibjpeg with pylibjpeg-libjpeg, or pyjpegls",
    JPEGLSNearLossless: "pylibjpeg with pylibjpeg-libjpeg, or pyjpegls",
    JPEG2000Lossless: "pylibjpeg with pylibjpeg-openjpeg, or Pillow",
    JPEG2000: "pylibjpeg with pylibjpeg-openjpeg, or Pillow",
    HTJ2KLossless: "pylibjpeg with pylibjpeg-openjpeg>=2.4",
    HTJ2KLosslessRPCL: "pylibjpeg with pylibjpeg-openjpeg>=2.4",
    HTJ2K: "pylibjpeg with pylibjpeg-openjpeg>=2.4",
    RLELossless: "pylibjpeg with pylibjpeg-rle (pydicom's own RLE decoder needs NumPy)",
}

# pydicom's decoding plugin names and the PyPI packages that provide them.
_PLUGIN_PACKAGES: Mapping[str, str] = {
    "gdcm": "python-gdcm",
    "pyjpegls": "pyjpegls",
    "pillow": "pillow",
    "pylibjpeg": "pylibjpeg with its codec plugins",
}

_KNOWN_TRANSFER_SYNTAXES = frozenset(AllTransferSyntaxes)

# PS3.3 C.7.6.3.1.2: samples per pixel each Photometric Interpretation requires.
_PHOTOMETRIC_SAMPLES: Mapping[str, int] = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_PARTIAL_420": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
    "XYB": 3,
}
# Retired terms, still found in old archives: accepted in lenient mode only.
_RETIRED_PHOTOMETRIC_SAMPLES: Mapping[str, int] = {
    "HSV": 3,
    "YBR_PARTIAL_422": 3,
    "ARGB": 4,
    "CMYK": 4,
}

# PS3.5 9.1: components are "0" or digits without a leading zero, at most 64 characters.
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_MAX = 64
_MODALITY_RE = re.compile(r"[A-Z0-9_ ]{1,16}")

# Tags (group << 16 | element) read from the raw bytes.
_MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
_TRANSFER_SYNTAX_UID = 0x00020010
_SPECIFIC_CHARACTER_SET = 0x00080005
_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_MODALITY = 0x00080060
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_SAMPLES_PER_PIXEL = 0x00280002
_PHOTOMETRIC_INTERPRETATION = 0x00280004
_NUMBER_OF_FRAMES = 0x00280008
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_BITS_ALLOCATED = 0x00280100
_BITS_STORED = 0x00280101
_HIGH_BIT = 0x00280102
_PIXEL_REPRESENTATION = 0x00280103
_FLOAT_PIXEL_DATA = 0x7FE00008
_DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
_PIXEL_DATA = 0x7FE00010

_KEYWORDS: Mapping[int, str] = {
    _MEDIA_STORAGE_SOP_CLASS_UID: "MediaStorageSOPClassUID",
    _MEDIA_STORAGE_SOP_INSTANCE_UID: "MediaStorageSOPInstanceUID",
    _TRANSFER_SYNTAX_UID: "TransferSyntaxUID",
    _SPECIFIC_CHARACTER_SET: "SpecificCharacterSet",
    _SOP_CLASS_UID: "SOPClassUID",
    _SOP_INSTANCE_UID: "SOPInstanceUID",
    _MODALITY: "Modality",
    _STUDY_INSTANCE_UID: "StudyInstanceUID",
    _SERIES_INSTANCE_UID: "SeriesInstanceUID",
    _SAMPLES_PER_PIXEL: "SamplesPerPixel",
    _PHOTOMETRIC_INTERPRETATION: "PhotometricInterpretation",
    _NUMBER_OF_FRAMES: "NumberOfFrames",
    _ROWS: "Rows",
    _COLUMNS: "Columns",
    _BITS_ALLOCATED: "BitsAllocated",
    _BITS_STORED: "BitsStored",
    _HIGH_BIT: "HighBit",
    _PIXEL_REPRESENTATION: "PixelRepresentation",
}

_REQUIRED_UIDS = (_SOP_CLASS_UID, _SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID)
# Type 1 Image Pixel attributes; only the first three are needed to size the pixel data.
_SIZING_ATTRIBUTES = (_ROWS, _COLUMNS, _BITS_ALLOCATED)
_STRICT_IMAGE_ATTRIBUTES = (
    _SAMPLES_PER_PIXEL,
    _PHOTOMETRIC_INTERPRETATION,
    _BITS_STORED,
    _HIGH_BIT,
    _PIXEL_REPRESENTATION,
)

_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# Deeper nesting than any real object carries; it bounds recursion on hostile input.
_MAX_DEPTH = 32

_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
# PS3.5 7.1.2: explicit VRs with a reserved field and a 4-byte length.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    """How strictly ``parse_and_validate`` judges one object; chosen per call or per route.

    ``strict`` rejects anything non-conformant it can detect; ``lenient`` accepts
    objects pydicom can still read reliably (a raw dataset without file meta, a file
    meta that disagrees with the dataset, UIDs with bad syntax, a lower-case Modality,
    missing optional image attributes, a wrong HighBit, retired photometric terms,
    excess pixel padding) and lists what it let through in
    ``DicomSummary.tolerated``. ``decode_check`` decodes the first frame of compressed
    pixel data. Raises ``ConfigError`` for an unknown mode or a non-positive limit.
    """

    mode: Literal["strict", "lenient"] = "strict"
    max_bytes: int = DEFAULT_MAX_BYTES
    require_pixel_data: bool = False
    allowed_transfer_syntaxes: frozenset[str] = DEFAULT_TRANSFER_SYNTAXES
    decode_check: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("strict", "lenient"):
            raise ConfigError("validation mode must be 'strict' or 'lenient'")
        if self.max_bytes <= 0:
            raise ConfigError("validation max_bytes must be positive")

    @property
    def strict(self) -> bool:
        """True in strict mode."""
        return self.mode == "strict"


@dataclass(frozen=True, slots=True)
class DicomSummary:
    """The identifying and structural facts ingest needs about one validated object.

    ``transfer_syntax_uid`` is the one the dataset was read with (inferred when a lenient
    policy accepted an object without file meta). ``number_of_frames``, ``rows`` and
    ``columns`` are 0/None when there is no pixel data. ``size`` is the payload length in
    bytes. ``tolerated`` lists the problems a lenient policy let through.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    transfer_syntax_uid: str
    has_pixel_data: bool
    number_of_frames: int
    rows: int | None
    columns: int | None
    size: int
    has_file_meta: bool
    tolerated: tuple[Reason, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class ValidatedObject:
    """A parsed dataset that passed validation, and its summary."""

    dataset: Dataset
    summary: DicomSummary


def parse_and_validate(data: bytes, policy: ValidationPolicy) -> ValidatedObject:
    """Parse one DICOM object from ``data`` and check it against ``policy``.

    Accepts DICOM Part 10 with or without the 128-byte preamble, and (lenient only) a
    raw dataset without file meta whose encoding can be inferred. Raises
    ``PayloadTooLarge`` (also when one decoded frame of compressed pixel data would
    exceed ``policy.max_bytes``) or ``InvalidDicom`` (see ``Reason``).
    """
    if len(data) > policy.max_bytes:
        raise PayloadTooLarge(f"the object is {len(data)} bytes; the limit is {policy.max_bytes} bytes")
    if not data:
        raise InvalidDicom("the payload is empty", reason=Reason.EMPTY)
    findings = _Findings(policy.strict)
    layout = _locate(data, policy, findings)
    elements = _Walker(layout.body, implicit=layout.implicit, little=layout.little).top_level(
        layout.body_start
    )
    values = _Values(layout.body, elements, little=layout.little)
    identity = _check_identity(values, layout, findings)
    image = _check_image(values, elements, layout, policy, findings)
    dataset = _parse(data)
    if image is not None and image.encapsulated:
        # Compressed data can claim any size; refuse frames no decoder should be asked for.
        if image.frame_bytes > policy.max_bytes:
            raise PayloadTooLarge(
                f"one decoded frame would be {image.frame_bytes} bytes; the limit is {policy.max_bytes} bytes"
            )
        if policy.decode_check:
            _check_first_frame_decodes(dataset, layout.transfer_syntax)
    summary = DicomSummary(
        sop_class_uid=identity[_SOP_CLASS_UID],
        sop_instance_uid=identity[_SOP_INSTANCE_UID],
        study_instance_uid=identity[_STUDY_INSTANCE_UID],
        series_instance_uid=identity[_SERIES_INSTANCE_UID],
        modality=identity[_MODALITY],
        transfer_syntax_uid=layout.transfer_syntax,
        has_pixel_data=image is not None,
        number_of_frames=image.frames if image else 0,
        rows=image.rows if image else None,
        columns=image.columns if image else None,
        size=len(data),
        has_file_meta=layout.has_file_meta,
        tolerated=tuple(findings.tolerated),
    )
    return ValidatedObject(dataset=dataset, summary=summary)


class _Findings:
    """Raises a problem under a strict policy; records it under a lenient one."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.tolerated: list[Reason] = []

    def problem(self, reason: Reason, detail: str) -> None:
        if self.strict:
            raise InvalidDicom(detail, reason=reason)
        if reason not in self.tolerated:
            self.tolerated.append(reason)


def _invalid(reason: Reason, detail: str) -> InvalidDicom:
    return InvalidDicom(detail, reason=reason)


# --- where the dataset starts and how it is encoded -------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the dataset lies in the payload, and its encoding."""

    body: bytes | memoryview  # the payload, or the inflated dataset of a deflated object
    body_start: int
    transfer_syntax: str
    implicit: bool
    little: bool
    has_file_meta: bool
    meta: Mapping[int, bytes]
    inferred: bool = False  # no TransferSyntaxUID: the encoding was guessed from the bytes


def _locate(data: bytes, policy: ValidationPolicy, findings: _Findings) -> _Layout:
    """Find the file meta (if any) and the dataset's transfer syntax."""
    view = memoryview(data)
    if len(data) >= 132 and data[128:132] == b"DICM":
        meta_start = 132
        if len(data) == meta_start:
            raise _invalid(Reason.TRUNCATED, "the object ends right after the DICOM prefix")
    elif _starts_with_file_meta(data):
        meta_start = 0  # a Part 10 stream written without preamble and prefix
    elif _starts_like_dataset(data):
        meta_start = -1
    else:
        raise _invalid(
            Reason.NOT_DICOM,
            "the payload is not DICOM: no DICM prefix, file meta group or dataset was found",
        )

    meta: dict[int, bytes] = {}
    body_start = max(meta_start, 0)
    if meta_start >= 0:
        meta_walker = _Walker(view, implicit=False, little=True)
        meta_elements = meta_walker.top_level(meta_start, only_group=0x0002)
        meta = {tag: bytes(view[e.offset : e.offset + e.length]) for tag, e in meta_elements.items()}
        body_start = meta_walker.stopped_at

    raw_syntax = meta.get(_TRANSFER_SYNTAX_UID)
    if raw_syntax is None:
        return _infer_layout(view, body_start, meta, findings)

    syntax = raw_syntax.rstrip(b"\x00 ").decode("ascii", errors="replace")
    if syntax not in policy.allowed_transfer_syntaxes:
        named = UID(syntax).name if syntax in _KNOWN_TRANSFER_SYNTAXES else "an unrecognised transfer syntax"
        raise _invalid(
            Reason.UNSUPPORTED_TRANSFER_SYNTAX, f"the transfer syntax ({named}) is not accepted here"
        )
    uid = UID(syntax)
    if uid == DeflatedExplicitVRLittleEndian:
        inflated = _inflate(view[body_start:], policy.max_bytes)
        return _Layout(inflated, 0, syntax, False, True, True, meta)
    return _Layout(view, body_start, syntax, uid.is_implicit_VR, uid.is_little_endian, True, meta)


def _starts_with_file_meta(data: bytes) -> bool:
    """True when ``data`` opens with an explicit VR little endian group 0002 element."""
    return len(data) >= 8 and data[0:2] == b"\x02\x00" and data[4:6] in _VRS


def _starts_like_dataset(data: bytes) -> bool:
    """True when ``data`` opens with a group 0008 element, as every composite object must.

    SOPClassUID (0008,0016) is Type 1 in every IOD and no dataset group precedes 0008,
    so the first element of a raw dataset is in group 0008 in any byte order.
    """
    return len(data) >= 8 and data[0:2] in (b"\x08\x00", b"\x00\x08")


def _infer_layout(
    view: memoryview, body_start: int, meta: Mapping[int, bytes], findings: _Findings
) -> _Layout:
    """Infer the encoding of a dataset that has no TransferSyntaxUID, as pydicom does."""
    if meta:
        findings.problem(Reason.MISSING_ATTRIBUTE, "the file meta lacks TransferSyntaxUID")
    else:
        findings.problem(
            Reason.MISSING_FILE_META,
            "the object has no file meta information; strict policy requires DICOM Part 10",
        )
    head = bytes(view[body_start : body_start + 8])
    if len(head) < 8 or not _starts_like_dataset(head):
        raise _invalid(Reason.MISSING_FILE_META, "the transfer syntax cannot be inferred without file meta")
    explicit = head[4:6] in _VRS
    little = head[0:2] == b"\x08\x00"
    if not little and not explicit:
        raise _invalid(Reason.MISSING_FILE_META, "the transfer syntax cannot be inferred without file meta")
    if not explicit:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    return _Layout(view, body_start, syntax, not explicit, little, bool(meta), meta, inferred=True)


def _inflate(deflated: memoryview, max_bytes: int) -> bytes:
    """Inflate a deflated dataset (PS3.5 A.5), refusing more than ``max_bytes`` of output."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(deflated, max_bytes + 1)
    except zlib.error as exc:
        raise _invalid(Reason.MALFORMED, "the deflated dataset cannot be inflated") from exc
    if len(inflated) > max_bytes:
        raise PayloadTooLarge(f"the inflated dataset exceeds the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise _invalid(Reason.TRUNCATED, "the deflated dataset ends before its deflate stream does")
    return inflated


# --- structure walk -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Element:
    """Where one top-level element's value lies; ``length`` is ``_UNDEFINED`` if undefined."""

    vr: bytes | None
    offset: int
    length: int
    fragments: tuple[tuple[int, int], ...] = ()  # encapsulated items, offset table first


class _Walker:
    """Walks the element structure of an encoded dataset without converting any value.

    Raises ``InvalidDicom`` with ``truncated`` when the bytes end inside an element, an
    undefined-length sequence or item, and ``malformed`` for any other structural damage.
    """

    def __init__(self, buffer: bytes | memoryview, *, implicit: bool, little: bool) -> None:
        self._buffer = buffer
        self._end = len(buffer)
        self._implicit = implicit
        order = "<" if little else ">"
        self._tag_length = struct.Struct(f"{order}HHL")
        self._explicit = struct.Struct(f"{order}HH2sH")
        self._long_length = struct.Struct(f"{order}L")
        self._tag = struct.Struct(f"{order}HH")
        self.stopped_at = 0

    def top_level(self, pos: int, *, only_group: int | None = None) -> dict[int, _Element]:
        """Return the top-level elements from ``pos`` to the end (or the end of a group)."""
        elements: dict[int, _Element] = {}
        while pos < self._end:
            if only_group is not None:
                if pos + 4 > self._end:
                    raise self._overrun(self._end)
                group, _ = self._tag.unpack_from(self._buffer, pos)
                if group != only_group:
                    break
            tag, vr, length, value = self._header(pos, self._end, nested=False)
            if tag >> 16 == 0xFFFE:
                raise _invalid(Reason.MALFORMED, "a sequence delimiter appears outside any sequence")
            fragments: list[tuple[int, int]] = []
            if length == _UNDEFINED:
                pos = self._items(value, None, 1, encapsulated=tag == _PIXEL_DATA, fragments=fragments)
            else:
                pos = self._value(tag, vr, value, length, self._end, 0)
            elements[tag] = _Element(vr, value, length, tuple(fragments))
        self.stopped_at = pos
        return elements

    def _overrun(self, limit: int) -> InvalidDicom:
        if limit == self._end:
            return _invalid(Reason.TRUNCATED, "the object ends inside a data element")
        return _invalid(Reason.MALFORMED, "a data element overruns its enclosing sequence item")

    def _header(self, pos: int, limit: int, *, nested: bool) -> tuple[int, bytes | None, int, int]:
        """Return tag, VR (None if implicit), length and value offset of the element at ``pos``."""
        if pos + 8 > limit:
            raise self._overrun(limit)
        group, element = self._tag.unpack_from(self._buffer, pos)
        tag = group << 16 | element
        if self._implicit or group == 0xFFFE:  # item tags carry no VR in any encoding
            length = self._tag_length.unpack_from(self._buffer, pos)[2]
            return tag, None, length, pos + 8
        _, _, vr, short_length = self._explicit.unpack_from(self._buffer, pos)
        if vr in _LONG_VRS:
            if pos + 12 > limit:
                raise self._overrun(limit)
            return tag, vr, self._long_length.unpack_from(self._buffer, pos + 8)[0], pos + 12
        if vr in _VRS:
            return tag, vr, short_length, pos + 8
        if nested and not b"AA" <= vr <= b"ZZ":
            # Some writers switch to implicit VR inside sequences; pydicom reads those.
            length = self._tag_length.unpack_from(self._buffer, pos)[2]
            return tag, None, length, pos + 8
        raise _invalid(
            Reason.MALFORMED, "a data element has no valid value representation for the transfer syntax"
        )

    def _value(self, tag: int, vr: bytes | None, pos: int, length: int, limit: int, depth: int) -> int:
        """Skip a defined-length value (walking it if it is a sequence); return its end."""
        end = pos + length
        if end > limit:
            raise self._overrun(limit)
        if length and _is_sequence(tag, vr):
            self._items(pos, end, depth + 1, encapsulated=False, fragments=[])
        return end

    def _items(
        self,
        pos: int,
        limit: int | None,
        depth: int,
        *,
        encapsulated: bool,
        fragments: list[tuple[int, int]],
    ) -> int:
        """Walk sequence items (or pixel data fragments) until ``limit`` or the delimiter."""
        if depth > _MAX_DEPTH:
            raise _invalid(Reason.MALFORMED, f"sequences are nested deeper than {_MAX_DEPTH} levels")
        bound = self._end if limit is None else limit
        while limit is None or pos < limit:
            if pos + 8 > bound:
                raise self._overrun(bound)
            group, element, length = self._tag_length.unpack_from(self._buffer, pos)
            tag = group << 16 | element
            pos += 8
            if tag == _SEQUENCE_END and limit is None:
                return pos
            if tag != _ITEM:
                raise _invalid(Reason.MALFORMED, "a sequence holds something other than items")
            if length == _UNDEFINED:
                if encapsulated:
                    raise _invalid(
                        Reason.MALFORMED, "an encapsulated pixel data fragment has undefined length"
                    )
                pos = self._dataset(pos, None, depth)
                continue
            if pos + length > bound:
                raise self._overrun(bound)
            if encapsulated:
                fragments.append((pos, length))
            else:
                self._dataset(pos, pos + length, depth)
            pos += length
        return pos

    def _dataset(self, pos: int, limit: int | None, depth: int) -> int:
        """Walk one item's dataset until ``limit`` or its item delimiter; return its end."""
        bound = self._end if limit is None else limit
        while limit is None or pos < limit:
            tag, vr, length, value = self._header(pos, bound, nested=True)
            if tag == _ITEM_END and limit is None:
                return value
            if tag >> 16 == 0xFFFE:
                raise _invalid(Reason.MALFORMED, "a sequence item holds a misplaced delimiter")
            if length == _UNDEFINED:
                pos = self._items(value, None, depth + 1, encapsulated=tag == _PIXEL_DATA, fragments=[])
            else:
                pos = self._value(tag, vr, value, length, bound, depth)
        return pos


def _is_sequence(tag: int, vr: bytes | None) -> bool:
    if vr is not None:
        return vr == b"SQ"
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:  # private or unknown tag in implicit VR: pydicom reads it as bytes too
        return False


# --- attribute values, read from the raw bytes ----------------------------------------------


class _Values:
    """Typed access to top-level values straight from the encoded bytes."""

    def __init__(self, body: bytes | memoryview, elements: Mapping[int, _Element], *, little: bool) -> None:
        self._body = body
        self._elements = elements
        self._ushort = struct.Struct("<H" if little else ">H")
        self.little = little

    def raw(self, tag: int) -> bytes | None:
        """The value bytes, or None when absent or of undefined length."""
        element = self._elements.get(tag)
        if element is None or element.length == _UNDEFINED:
            return None
        return bytes(self._body[element.offset : element.offset + element.length])

    def slice(self, span: tuple[int, int]) -> bytes:
        """The bytes at (offset, length) of the encoded dataset."""
        offset, length = span
        return bytes(self._body[offset : offset + length])

    def text(self, tag: int) -> str | None:
        """An ASCII value without padding; None when absent or empty."""
        raw = self.raw(tag)
        if raw is None:
            return None
        try:
            value = raw.decode("ascii").strip(" \x00")
        except UnicodeDecodeError as exc:
            raise _invalid(Reason.INVALID_VALUE, f"{_KEYWORDS[tag]} is not ASCII text") from exc
        return value or None

    def ushort(self, tag: int) -> int | None:
        """A US value; None when absent or empty."""
        raw = self.raw(tag)
        if not raw:
            return None
        if len(raw) != 2:
            raise _invalid(Reason.INVALID_VALUE, f"{_KEYWORDS[tag]} is not a single unsigned short")
        value: int = self._ushort.unpack(raw)[0]
        return value


# --- identity checks -----------------------------------------------------------------------


def _check_identity(values: _Values, layout: _Layout, findings: _Findings) -> dict[int, str]:
    """Check the identifying attributes; return them by tag."""
    identity: dict[int, str] = {}
    missing = []
    for tag in (*_REQUIRED_UIDS, _MODALITY):
        value = values.text(tag)
        if value is None:
            missing.append(_KEYWORDS[tag])
        else:
            identity[tag] = value
    if missing:
        raise _invalid(
            Reason.MISSING_ATTRIBUTE, f"required attributes are missing or empty: {', '.join(missing)}"
        )
    for tag in _REQUIRED_UIDS:
        _check_uid(tag, identity[tag], findings)
    if not _MODALITY_RE.fullmatch(identity[_MODALITY]):
        findings.problem(Reason.INVALID_VALUE, "Modality is not a valid code string")
    _check_character_set(values, findings)
    if layout.has_file_meta:
        _check_file_meta(layout.meta, identity, findings)
    return identity


def _check_character_set(values: _Values, findings: _Findings) -> None:
    """Check SpecificCharacterSet names character sets pydicom knows (PS3.3 C.12.1.1.2).

    pydicom substitutes its default for an unknown term, which garbles names, and warns.
    """
    text = values.text(_SPECIFIC_CHARACTER_SET)
    if text is None:
        return
    terms = [term.strip() for term in text.split("\\")]
    if not all(term in python_encoding for term in terms):
        findings.problem(Reason.INVALID_VALUE, "SpecificCharacterSet names an unknown character set")
    elif len(terms) > 1 and any(term in STAND_ALONE_ENCODINGS for term in terms):
        findings.problem(Reason.INVALID_VALUE, "SpecificCharacterSet combines a stand-alone character set")


def _check_uid(tag: int, value: str, findings: _Findings) -> None:
    if len(value) <= _UID_MAX and _UID_RE.fullmatch(value):
        return
    # Even lenient ingest needs a UID it can index and write back: printable, single-valued.
    if len(value) > _UID_MAX or "\\" in value or not value.isprintable():
        raise _invalid(Reason.INVALID_UID, f"{_KEYWORDS[tag]} is not a usable UID")
    findings.problem(Reason.INVALID_UID, f"{_KEYWORDS[tag]} does not follow the UID syntax of PS3.5 9.1")


def _check_file_meta(meta: Mapping[int, bytes], identity: Mapping[int, str], findings: _Findings) -> None:
    """Check the file meta names the same SOP class and instance as the dataset."""
    pairs = (
        (_MEDIA_STORAGE_SOP_CLASS_UID, _SOP_CLASS_UID),
        (_MEDIA_STORAGE_SOP_INSTANCE_UID, _SOP_INSTANCE_UID),
    )
    for meta_tag, dataset_tag in pairs:
        raw = meta.get(meta_tag)
        if raw is None or not raw.strip(b" \x00"):
            findings.problem(Reason.MISSING_ATTRIBUTE, f"the file meta lacks {_KEYWORDS[meta_tag]}")
        elif raw.strip(b" \x00") != identity[dataset_tag].encode("ascii"):
            findings.problem(
                Reason.META_MISMATCH,
                f"the file meta {_KEYWORDS[meta_tag]} differs from the dataset {_KEYWORDS[dataset_tag]}",
            )


# --- pixel data checks ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Image:
    rows: int
    columns: int
    frames: int
    encapsulated: bool
    frame_bytes: int  # one decoded frame


def _check_image(
    values: _Values,
    elements: Mapping[int, _Element],
    layout: _Layout,
    policy: ValidationPolicy,
    findings: _Findings,
) -> _Image | None:
    """Check the pixel data against the Image Pixel attributes; None when there is none."""
    pixel_tag = next(
        (t for t in (_PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_FLOAT_PIXEL_DATA) if t in elements), None
    )
    if pixel_tag is None:
        if policy.require_pixel_data:
            raise _invalid(Reason.MISSING_PIXEL_DATA, "the object has no pixel data; this policy requires it")
        return None
    pixel = elements[pixel_tag]

    needed = _SIZING_ATTRIBUTES + (_STRICT_IMAGE_ATTRIBUTES if pixel_tag == _PIXEL_DATA else ())
    missing = [_KEYWORDS[t] for t in needed if values.raw(t) in (None, b"")]
    hard_missing = [_KEYWORDS[t] for t in _SIZING_ATTRIBUTES if _KEYWORDS[t] in missing]
    if hard_missing or (missing and findings.strict):
        raise _invalid(
            Reason.MISSING_IMAGE_ATTRIBUTE,
            f"pixel data is present but these attributes are missing: {', '.join(missing)}",
        )
    if missing:
        findings.problem(Reason.MISSING_IMAGE_ATTRIBUTE, "image attributes are missing")

    rows, columns, bits_allocated = (values.ushort(t) or 0 for t in _SIZING_ATTRIBUTES)
    frames = _number_of_frames(values)
    if rows == 0 or columns == 0:
        raise _invalid(Reason.INVALID_DIMENSIONS, f"the image is {rows} rows by {columns} columns")

    if pixel_tag != _PIXEL_DATA:
        # Float Pixel Data is always native, one sample per pixel (PS3.3 C.7.6.3.1.3).
        _check_native_length(pixel, rows * columns * frames * bits_allocated, findings)
        return _Image(rows, columns, frames, False, rows * columns * bits_allocated // 8)

    samples = values.ushort(_SAMPLES_PER_PIXEL) or 1
    photometric = values.text(_PHOTOMETRIC_INTERPRETATION)
    _check_bit_depth(values, bits_allocated, findings)
    _check_photometric(photometric, samples, findings)

    if layout.inferred and pixel.length == _UNDEFINED:
        raise _invalid(
            Reason.MISSING_FILE_META,
            "compressed pixel data needs a TransferSyntaxUID; it cannot be inferred",
        )
    encapsulated = UID(layout.transfer_syntax).is_encapsulated
    if encapsulated != (pixel.length == _UNDEFINED):
        raise _invalid(
            Reason.PIXEL_ENCODING,
            "PixelData is encapsulated but the transfer syntax is native"
            if not encapsulated
            else "PixelData is native but the transfer syntax is compressed",
        )
    if encapsulated:
        _check_fragments(pixel, frames, values)
    else:
        # YBR_FULL_422 native data stores two luminance and two chroma values per pixel pair.
        stored_samples = 2 if photometric == "YBR_FULL_422" else samples
        _check_native_length(pixel, rows * columns * stored_samples * frames * bits_allocated, findings)
    return _Image(rows, columns, frames, encapsulated, (rows * columns * samples * bits_allocated + 7) // 8)


def _number_of_frames(values: _Values) -> int:
    text = values.text(_NUMBER_OF_FRAMES)
    if text is None:
        return 1
    try:
        frames = int(text)
    except ValueError as exc:
        raise _invalid(Reason.INVALID_DIMENSIONS, "NumberOfFrames is not an integer") from exc
    if frames < 1:
        raise _invalid(Reason.INVALID_DIMENSIONS, f"NumberOfFrames is {frames}; it must be at least 1")
    return frames


def _check_bit_depth(values: _Values, bits_allocated: int, findings: _Findings) -> None:
    if not (bits_allocated == 1 or (bits_allocated % 8 == 0 and 8 <= bits_allocated <= 64)):
        raise _invalid(
            Reason.INVALID_BIT_DEPTH, f"BitsAllocated is {bits_allocated}; it must be 1 or a multiple of 8"
        )
    bits_stored = values.ushort(_BITS_STORED)
    if bits_stored is not None and not 1 <= bits_stored <= bits_allocated:
        raise _invalid(
            Reason.INVALID_BIT_DEPTH,
            f"BitsStored is {bits_stored}; it must be between 1 and BitsAllocated ({bits_allocated})",
        )
    high_bit = values.ushort(_HIGH_BIT)
    if bits_stored is not None and high_bit is not None and high_bit != bits_stored - 1:
        findings.problem(
            Reason.INVALID_BIT_DEPTH, f"HighBit is {high_bit}; BitsStored implies {bits_stored - 1}"
        )
    representation = values.ushort(_PIXEL_REPRESENTATION)
    if representation not in (None, 0, 1):
        raise _invalid(Reason.INVALID_VALUE, "PixelRepresentation must be 0 or 1")


def _check_photometric(photometric: str | None, samples: int, findings: _Findings) -> None:
    if photometric is None:
        return  # only reachable in lenient mode, where its absence was already recorded
    expected = _PHOTOMETRIC_SAMPLES.get(photometric)
    if expected is None:
        expected = _RETIRED_PHOTOMETRIC_SAMPLES.get(photometric)
        if expected is None:
            raise _invalid(Reason.UNKNOWN_PHOTOMETRIC, "PhotometricInterpretation is not a defined term")
        findings.problem(Reason.UNKNOWN_PHOTOMETRIC, "PhotometricInterpretation is a retired term")
    if samples != expected:
        raise _invalid(
            Reason.SAMPLES_MISMATCH,
            f"SamplesPerPixel is {samples} but the PhotometricInterpretation requires {expected}",
        )


def _check_native_length(pixel: _Element, total_bits: int, findings: _Findings) -> None:
    """Compare native pixel data's length with what the image attributes imply."""
    expected = (total_bits + 7) // 8
    actual = pixel.length
    if actual == expected or (expected % 2 == 1 and actual == expected + 1):
        return  # PS3.5 8.1.1: odd lengths carry one byte of padding
    detail = (
        f"the pixel data is {actual} bytes; Rows, Columns, SamplesPerPixel, BitsAllocated "
        f"and NumberOfFrames imply {expected}"
    )
    if actual < expected:
        raise _invalid(Reason.PIXEL_LENGTH, detail)
    findings.problem(Reason.PIXEL_LENGTH, detail)


def _check_fragments(pixel: _Element, frames: int, values: _Values) -> None:
    """Check encapsulated pixel data's item structure (PS3.5 A.4) against the frame count.

    A wrong Basic Offset Table is rejected in every mode: pydicom locates frames by it,
    so a frame it mislocates could not be decoded later.
    """
    if not pixel.fragments:
        raise _invalid(Reason.FRAGMENTS, "the encapsulated pixel data has no Basic Offset Table item")
    table_length = pixel.fragments[0][1]
    fragments = pixel.fragments[1:]
    # A frame may span fragments but no fragment holds more than one frame.
    if len(fragments) < frames:
        raise _invalid(Reason.FRAGMENTS, f"{len(fragments)} pixel data fragments cannot hold {frames} frames")
    if not table_length:
        return
    if table_length != 4 * frames:
        raise _invalid(
            Reason.FRAGMENTS,
            f"the Basic Offset Table holds {table_length} bytes; {frames} frames need {4 * frames}",
        )
    table = values.slice(pixel.fragments[0])
    offsets = struct.unpack(f"{'<' if values.little else '>'}{frames}L", table)
    items_length = sum(8 + length for _, length in fragments)
    if offsets[0] != 0 or any(b <= a for a, b in itertools.pairwise(offsets)) or offsets[-1] >= items_length:
        raise _invalid(Reason.FRAGMENTS, "the Basic Offset Table does not point at the fragments")


# --- parsing and decoding -------------------------------------------------------------------


def _parse(data: bytes) -> Dataset:
    """Parse with pydicom; the structure walk has already accepted the framing."""
    try:
        # force=True only lets pydicom read what _locate() recognised: Part 10 without
        # preamble, or (lenient) a raw dataset.
        return dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, struct.error, zlib.error, ValueError) as exc:
        raise _invalid(Reason.MALFORMED, "pydicom cannot parse the object") from exc


def _check_first_frame_decodes(dataset: Dataset, transfer_syntax: str) -> None:
    """Decode the first frame of compressed pixel data with the installed plugins."""
    hint = _DECODER_HINTS.get(transfer_syntax, "a pydicom pixel data plugin for this transfer syntax")
    name = (
        UID(transfer_syntax).name if transfer_syntax in _KNOWN_TRANSFER_SYNTAXES else "this transfer syntax"
    )
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise _invalid(Reason.PIXEL_DECODE, f"pydicom has no pixel data decoder for {name}") from exc
    if not decoder.is_available:
        raise _invalid(
            Reason.PIXEL_DECODE, f"no installed plugin can decode {name} pixel data; install {hint}"
        )
    # pylibjpeg-rle panics (a BaseException) on some corrupt input; pydicom's own RLE
    # decoder raises ordinary errors instead.
    plugin = "pydicom" if transfer_syntax == RLELossless else ""
    try:
        decoder.as_array(dataset, index=0, raw=True, decoding_plugin=plugin)
    except (RuntimeError, ValueError, AttributeError, KeyError) as exc:
        # pydicom wraps plugin failures in RuntimeError and reports image attributes
        # that contradict the codestream as ValueError/AttributeError.
        others = [
            _PLUGIN_PACKAGES.get(plugin, plugin)
            for plugin in (entry.split(" - ")[0] for entry in decoder.missing_dependencies)
        ]
        remedy = f"; if it is not corrupt, try installing {' or '.join(others)}" if others else ""
        raise _invalid(
            Reason.PIXEL_DECODE,
            f"the first frame of the {name} pixel data cannot be decoded by the installed plugins{remedy}",
        ) from exc
