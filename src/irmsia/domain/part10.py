"""Encode a dataset as a DICOM Part 10 file in memory, quickly, with pydicom's exact output.

``encode_part10(ds)`` produces the same bytes as ``ds.save_as(buffer, enforce_file_format=True)``
for the datasets the ingest pipeline writes, at a fraction of the cost: pydicom's writer
spends tens of microseconds of Python per element, while most elements of a de-identified
object are kept ones that arrive still undecoded (``RawDataElement``) and only need their
original bytes copied behind a header (PS3.5 §7.1). Elements IRMSIA created (new UIDs,
shifted dates, pseudonyms, codes) are encoded here when they are plain ASCII strings or
numbers, and by pydicom's own element writer otherwise (sequences, non-ASCII text,
decimal strings, person-name objects, …).

The fast path covers Explicit and Implicit VR Little Endian and the encapsulated
(compressed) syntaxes, which are Explicit VR Little Endian too; for anything else (Deflated,
Big Endian) or a dataset whose undecoded elements are encoded otherwise than the target
syntax, the whole file goes through pydicom. ``tests/unit/domain/test_part10.py`` checks
byte-for-byte equality with pydicom on every kind of object the tests build.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)  # sequence delimitation item
_ITEM_UNDEFINED = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_GROUP_LENGTH = 0x00020000
_PREFIX = b"DICM"
_META = (  # the file meta that pydicom would otherwise add or refuse the file without
    "FileMetaInformationVersion",
    "MediaStorageSOPClassUID",
    "MediaStorageSOPInstanceUID",
    "TransferSyntaxUID",
    "ImplementationClassUID",
    "ImplementationVersionName",
)


def encode_part10(ds: Dataset) -> bytes:
    """``ds`` (with ``file_meta`` naming its transfer syntax) as a Part 10 file.

    Raises what pydicom's writer raises for a dataset it cannot encode.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or not all(meta.get(keyword) for keyword in _META):
        return _pydicom(ds)  # pydicom completes (or refuses) an incomplete file meta
    syntax = UID(meta.TransferSyntaxUID)
    implicit = syntax == ImplicitVRLittleEndian
    if syntax == DeflatedExplicitVRLittleEndian or not syntax.is_little_endian or _mismatched(ds, implicit):
        return _pydicom(ds)
    out = io.BytesIO()
    preamble = ds.preamble if ds.preamble is not None else b"\0" * 128
    out.write(preamble)
    out.write(_PREFIX)
    group_buffer = io.BytesIO()
    for key in sorted(meta.keys()):
        if int(key) != _GROUP_LENGTH:
            _element(group_buffer, meta.get_item(key), implicit=False, encodings=None)
    group = group_buffer.getvalue()
    out.write(struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(group)))
    out.write(group)
    _body(out, ds, implicit=implicit, parent_charset=None)
    return out.getvalue()


def _body(out: io.BytesIO, ds: Dataset, *, implicit: bool, parent_charset: Any) -> None:
    """The elements of ``ds`` in tag order (PS3.5 §7.1), as pydicom's ``write_dataset``."""
    charset = ds.get("SpecificCharacterSet", parent_charset)
    for key in sorted(ds.keys()):
        tag = int(key)
        if tag & 0xFFFF == 0 and tag >> 16 > 6:  # retired group lengths are not written (PS3.5 §7.2)
            continue
        _element(out, ds.get_item(key), implicit=implicit, encodings=charset)


def _mismatched(ds: Dataset, implicit: bool) -> bool:
    """Undecoded elements in another encoding or character set than the target's (pydicom
    would decode and re-encode them), or VRs still ambiguous ("US or SS")."""
    original_implicit, original_little = ds.original_encoding
    has_raw = False
    for key in ds.keys():  # noqa: SIM118  (iterating a Dataset decodes its elements; its keys do not)
        item = ds.get_item(key)
        if isinstance(item, RawDataElement):
            has_raw = True
        elif item.VR is not None and len(item.VR) != 2:
            return True
    if not has_raw:
        return False
    return (
        original_implicit is not implicit
        or original_little is not True
        or ds.original_character_set != ds._character_set
    )


def _element(out: io.BytesIO, item: DataElement | RawDataElement, *, implicit: bool, encodings: Any) -> None:
    if isinstance(item, RawDataElement):
        raw = item.value or b""
        undefined = item.length == 0xFFFFFFFF
        _header(out, int(item.tag), item.VR, 0xFFFFFFFF if undefined else len(raw), implicit)
        out.write(raw)
        if undefined:
            out.write(_DELIMITER)
        return
    if item.VR == "SQ":
        _sequence(out, item, implicit=implicit, encodings=encodings)
        return
    value = _simple_value(item)
    if value is None or (not implicit and item.VR not in _LONG_VRS and len(value) > 0xFFFF):
        _pydicom_element(out, item, implicit=implicit, encodings=encodings)
        return
    _header(out, int(item.tag), item.VR, len(value), implicit)
    out.write(value)


def _sequence(out: io.BytesIO, elem: DataElement, *, implicit: bool, encodings: Any) -> None:
    """A sequence as pydicom writes it: items of explicit length unless read with undefined
    length, the sequence of undefined length when it was read so."""
    items = list(elem.value or ())
    if elem.is_buffered or any(_mismatched(item, implicit) for item in items):
        _pydicom_element(out, elem, implicit=implicit, encodings=encodings)
        return
    body = io.BytesIO()
    for item in items:
        encoded = io.BytesIO()
        _body(encoded, item, implicit=implicit, parent_charset=encodings)
        value = encoded.getvalue()
        if getattr(item, "is_undefined_length_sequence_item", False):
            body.write(_ITEM_UNDEFINED)
            body.write(value)
            body.write(_ITEM_DELIMITER)
        else:
            body.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(value)))
            body.write(value)
    content = body.getvalue()
    undefined = elem.is_undefined_length
    _header(out, int(elem.tag), "SQ", 0xFFFFFFFF if undefined else len(content), implicit)
    out.write(content)
    if undefined:
        out.write(_DELIMITER)


def _header(out: io.BytesIO, tag: int, vr: str | None, length: int, implicit: bool) -> None:
    if implicit:
        out.write(struct.pack("<HHI", tag >> 16, tag & 0xFFFF, length))
    elif vr in _LONG_VRS:
        out.write(struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length))
    else:
        out.write(struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, (vr or "UN").encode(), length))


def _simple_value(elem: DataElement) -> bytes | None:
    """The encoded value of a plain element, or None to let pydicom encode it."""
    vr, value = elem.VR, elem.value
    if elem.is_undefined_length or elem.is_buffered:
        return None
    if value is None or (isinstance(value, str | bytes | MultiValue | list) and len(value) == 0):
        return b""
    if vr in _TEXT_VRS:
        texts = _strings(value)
        if texts is None:
            return None
        try:
            encoded = "\\".join(texts).encode("ascii")
        except UnicodeEncodeError:  # non-ASCII text: pydicom applies the character set
            return None
        if len(encoded) % 2:
            encoded += b"\0" if vr == "UI" else b" "
        return encoded
    fmt = _NUMBER_FORMATS.get(vr)
    if fmt is not None:
        numbers = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        if not all(type(n) in (int, float) for n in numbers):
            return None
        try:
            return struct.pack(f"<{len(numbers)}{fmt}", *numbers)
        except struct.error:
            return None
    if vr in ("OB", "OW", "UN") and type(value) is bytes:
        return value + b"\0" if len(value) % 2 else value
    return None


def _strings(value: Any) -> Sequence[str] | None:
    if type(value) is str or type(value) is UID:
        return [value]
    if isinstance(value, MultiValue | list) and all(type(v) in (str, UID) for v in value):
        return list(value)
    return None


def _pydicom_element(out: io.BytesIO, elem: DataElement, *, implicit: bool, encodings: Any) -> None:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_data_element(buffer, elem, encodings)
    out.write(buffer.getvalue())


def _pydicom(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
