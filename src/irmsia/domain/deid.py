"""De-identification of one in-memory DICOM dataset (PS3.15 Annex E, Basic Profile + options).

Pure logic: ``Deidentifier.deidentify(ds)`` builds a new dataset from ``ds`` and touches no
file. The input is never changed (pydicom may convert lazily-read elements in place while
they are read, which changes no value); the output shares only immutable values with it,
such as the Pixel Data bytes, which are never decoded.

Rules, in the order they are decided for each attribute, at every depth of every sequence:

1. Private attributes (odd group) are removed. With Retain Safe Private, an element is kept
   when (group, Private Creator, element offset) is on the allow-list
   (``data/safe_private.json``), and a Private Creator element is kept when its creator has
   at least one allowed element; everything else private is removed.
2. Curves (50xx) and overlays (60xx) are removed as whole groups. With Clean Graphics they
   are kept: their text is cleaned, their bitmaps are kept without inspection (like pixel
   data: checking them for burned-in text is the caller's job).
3. Patient's Name (top level), Patient ID and Accession Number (any depth) get keyed
   pseudonyms (``P``), so studies stay groupable; see ``irmsia.domain.pseudonym``.
4. Attributes of Table E.1-1 follow the table (``data/annex_e.csv``) for the enabled
   options; compound codes resolve as ``deid_profile.resolve_code`` explains.
5. Attributes not in the table ("unlisted") are treated conservatively: unknown public
   tags, group lengths, Encrypted Attributes and Issuer of Accession Number are removed (and
   the de-identification attributes are rewritten); UIDs are replaced unless they name a
   class or scheme (``CLASS_UID_KEYWORDS``) or are well known (pydicom's UID dictionary or
   the DICOM root ``1.2.840.10008``); every PN is zeroed; an attribute whose keyword names a
   person (Patient, Physician, Operator, …) together with an identifying word (Name, ID,
   Birth, Death, …), and any Address/Telephone/Telecom/e-mail attribute, is removed; dates
   (DA, DT) are shifted, kept or zeroed like the table's dates; Text Value is cleaned inside
   structured content and removed elsewhere; other text inside a sequence being cleaned is
   scrubbed; everything else is kept.

How each action writes its value:

* ``X`` removes; ``Z`` writes a zero-length value (an empty sequence for SQ).
* ``D`` writes a dummy valid for the VR (``ANONYMIZED``, ``19000101``, ``0`` …); for UI the
  consistent replacement UID. A sequence cannot get a generic dummy item, so D empties it.
* ``U`` replaces every UID value (see rule 5 for the ones kept); on a sequence (``X/Z/U*``)
  it keeps the items and replaces the UIDs inside, so references stay consistent.
* ``C`` cleans. Dates: with Retain Longitudinal Modified Dates every DA and the date part of
  every DT move by the patient's day offset; times (TM) are kept. Opaque bytes of a table
  row (Maker Note, Device Setting Description, Frame Origin Timestamp) cannot be cleaned:
  the row's Basic Profile action applies instead. Free text (ST, LT, UT) of a
  table row is replaced by ``REMOVED``: narrative comments cannot be cleaned reliably.
  Short descriptors (SH, LO, …), Text Value items of structured content and text inside
  cleaned sequences are scrubbed: words equal to a person name or identifier found anywhere
  in the dataset, runs of 5 or more digits (dates, phone numbers, record numbers) and e-mail
  addresses are deleted, the rest is kept. Codes (Code Value, Coding Scheme, Code Meaning)
  and numbers are kept. Sequences are walked with the same rules. Scrubbing cannot find a
  name it was never told (a relative's name in a finding, a date written in words): that
  residual risk is why free-text comments are replaced rather than scrubbed.
* ``K`` keeps; on a sequence it walks the items with the same rules.

The result also carries the identity record for the vault (``IdentityRecord``, whose repr
hides every original value) and the list of actions taken (``PlannedAction``: tag, keyword,
VR, action, reason, never a value). Any unexpected failure raises
``DeidentificationError`` naming only the attribute's position, never a value (fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from enum import StrEnum
from struct import error as StructError
from typing import Any, NamedTuple

import numpy as np
from pydicom import config
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)

from irmsia.domain.deid_profile import (
    Action,
    ConfidentialityProfile,
    Option,
    SafePrivateList,
    load_profile,
    load_safe_private,
    resolve_code,
)
from irmsia.domain.pseudonym import Pseudonymizer, identity_basis
from irmsia.errors import ConfigError, DeidentificationError, InvalidRequest

__all__ = [
    "CLASS_UID_KEYWORDS",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "SUSPECT_MODALITIES",
    "SUSPECT_SOP_CLASSES",
    "BurnedInDecision",
    "BurnedInPolicy",
    "DeidOptions",
    "DeidResult",
    "Deidentifier",
    "IdentityRecord",
    "PlannedAction",
    "Region",
    "burned_in_risk",
    "decide_burned_in",
    "mask_regions",
    "what_if",
]

# IRMSIA's own implementation class UID: "2.25." + the UUIDv5 of "irmsia.implementation-class".
IMPLEMENTATION_CLASS_UID = "2.25.64805867446223373254316525294310750217"
IMPLEMENTATION_VERSION_NAME = "IRMSIA"
REMOVED_TEXT = "REMOVED"

# Unlisted UI attributes whose values name a class, scheme or syntax, never an instance.
CLASS_UID_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "AffectedSOPClassUID",
        "RequestedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "ReferencedTransferSyntaxUIDInFile",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "ImplementationClassUID",
        "EncryptedContentTransferSyntaxUID",
    }
)
# Coded entries are vocabulary, not narrative: never scrubbed.
_CODE_KEYWORDS = frozenset(
    {
        "CodeValue",
        "LongCodeValue",
        "URNCodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "ContextIdentifier",
        "ContextGroupVersion",
        "MappingResource",
        "ValueType",
        "RelationshipType",
        "ContinuityOfContent",
    }
)
# Unlisted attributes IRMSIA always removes, with the reason recorded in the actions.
_ALWAYS_REMOVED = {
    0x00120062: "rewritten by the de-identifier",  # Patient Identity Removed
    0x00120063: "rewritten by the de-identifier",  # De-identification Method
    0x00120064: "rewritten by the de-identifier",  # De-identification Method Code Sequence
    0x00280303: "rewritten by the de-identifier",  # Longitudinal Temporal Information Modified
    0x04000500: "holds encrypted originals",  # Encrypted Attributes Sequence
    0x00080051: "names the issuer of a pseudonymised number",  # Issuer of Accession Number Sequence
}
_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020
_PATIENT_BIRTH_DATE = 0x00100030
_ACCESSION_NUMBER = 0x00080050
_TEXT_VALUE = 0x0040A160
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "CS", "AE", "UR"})
_FREE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
_SCRUBBED_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
_PERSON = re.compile(
    r"(?<![A-Z])(?:Patient|Person|Physician|Operator|Performer|Observer|Author|Requesting|Referring"
    r"|Reviewer|Responsible|Mother|Participant|Recipient|Owner|Enterer|Transcriber|Approver|Recorder"
    r"|Interpreter|Subject|Verifying|Human|Caregiver|Investigator)s?(?=[A-Z]|\d|$)"
)
_IDENTIFYING = re.compile(r"(?<![A-Z])(?:IDs?|Identifiers?|Names?|Birth|Death)(?=[A-Z]|\d|$)")
_CONTACT = re.compile(r"Address|Telephone|Telecom|EMail|Email|ElectronicMail")
_EMAIL = re.compile(r"\S+@\S+")
_NUMBERISH = re.compile(r"\+?\d[\d \t\-./()]*\d|\d")
_DATE_TIME = re.compile(r"(\d{4})(\d{2})?(\d{2})?(.*)", re.DOTALL)
_DICOM_ROOT = "1.2.840.10008."

_DUMMY_TEXT: dict[str, str] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMOUS",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UR": "ANONYMIZED",
    "UT": "ANONYMIZED",
}
_NUMERIC_VRS = frozenset({"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"})
# C on any other VR (numbers, TM, AS, curve and overlay bytes) keeps the value: only text and
# dates are cleaned (a table row's opaque bytes fall back to the Basic Profile, see _Rules).
_CLEANED_VRS = _TEXT_VRS | {"DA", "DT", "PN"}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

_METHOD_CODES: tuple[tuple[Option | None, str, str], ...] = (
    (None, "113100", "Basic Application Confidentiality Profile"),
    (Option.CLEAN_GRAPHICS, "113103", "Clean Graphics Option"),
    (Option.CLEAN_STRUCTURED_CONTENT, "113104", "Clean Structured Content Option"),
    (Option.CLEAN_DESCRIPTORS, "113105", "Clean Descriptors Option"),
    (Option.RETAIN_LONG_FULL_DATES, "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    (
        Option.RETAIN_LONG_MODIFIED_DATES,
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    (Option.RETAIN_PATIENT_CHARACTERISTICS, "113108", "Retain Patient Characteristics Option"),
    (Option.RETAIN_DEVICE_IDENTITY, "113109", "Retain Device Identity Option"),
    (Option.RETAIN_UIDS, "113110", "Retain UIDs Option"),
    (Option.RETAIN_SAFE_PRIVATE, "113111", "Retain Safe Private Option"),
    (Option.RETAIN_INSTITUTION_IDENTITY, "113112", "Retain Institution Identity Option"),
)
_CLEAN_PIXEL_DATA = ("113101", "Clean Pixel Data Option")
_CODE_VALUE, _CODING_SCHEME, _CODE_MEANING = Tag(0x00080100), Tag(0x00080102), Tag(0x00080104)

# Errors that mean "this dataset could not be processed"; anything else is a bug and
# propagates as is. Each is re-raised as DeidentificationError without its message,
# which may quote a value.
_PROCESSING_ERRORS = (
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    ArithmeticError,
    NotImplementedError,
    RecursionError,
    StructError,
    BytesLengthException,
    InvalidDicomError,
)


@dataclass(frozen=True, slots=True)
class DeidOptions:
    """The PS3.15 options to apply on top of the Basic Profile (all off by default).

    ``retain_long_full_dates`` and ``retain_long_modified_dates`` exclude each other
    (``ConfigError``).
    """

    retain_safe_private: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_long_full_dates: bool = False
    retain_long_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False

    def __post_init__(self) -> None:
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise ConfigError("retain full dates and retain modified dates cannot both be enabled")

    def enabled(self) -> frozenset[Option]:
        """The enabled options as table columns."""
        return frozenset(Option(f.name) for f in fields(self) if getattr(self, f.name))

    def method_description(self) -> list[str]:
        """Values for De-identification Method (0012,0063): each at most 64 characters."""
        enabled = self.enabled()
        return ["IRMSIA", "PS3.15 Basic Application Confidentiality Profile"] + [
            meaning for option, _, meaning in _METHOD_CODES if option is not None and option in enabled
        ]


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """What happens to one attribute; never carries a value.

    ``path`` locates the containing item (``""`` for the top level, ``"file_meta"`` for the
    file meta information, ``"ReferencedImageSequence[0]"`` for a nested item).
    """

    path: str
    tag: int
    keyword: str
    vr: str
    action: Action
    reason: str

    @property
    def tag_text(self) -> str:
        return f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """The original identity, for the key-protected vault only. Its repr hides values."""

    pseudonym: str
    pseudonymised_accession: str
    patient_name: str = field(repr=False)
    patient_id: str = field(repr=False)
    patient_birth_date: str = field(repr=False)
    accession_number: str = field(repr=False)
    date_shift_days: int | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeidResult:
    """The de-identified dataset, its pseudonym, the vault record and the actions taken."""

    dataset: Dataset = field(repr=False)
    pseudonym: str
    identity: IdentityRecord
    actions: tuple[PlannedAction, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Decision:
    action: Action
    reason: str
    scrub: bool = False  # C on text: delete identifying words instead of replacing the text


_REMOVE_PRIVATE = _Decision(Action.REMOVE, "private attribute")
_KEEP_SAFE_PRIVATE = _Decision(Action.KEEP, "safe private attribute")


class _Rules:
    """Decides the action for each attribute; shared by deidentify and what_if."""

    def __init__(
        self, options: DeidOptions, profile: ConfidentialityProfile, safe_private: SafePrivateList
    ) -> None:
        self.options = options
        self._safe_private = safe_private
        enabled = options.enabled()
        # Resolve the table once for these options: a dict lookup per attribute afterwards.
        self._table: dict[int, _Decision] = {}
        # C on opaque bytes (Maker Note, Frame Origin Timestamp, …) cannot be done: the
        # Basic Profile action applies instead, never keeping the bytes.
        self._uncleanable: dict[int, _Decision] = {}
        for tag, row in profile.exact_rows.items():
            code = row.code_for(enabled)
            self._table[tag] = _Decision(resolve_code(code), f"table {code}")
            if code == "C":
                basic = resolve_code(row.basic)
                self._uncleanable[tag] = _Decision(basic, f"table {row.basic}: bytes cannot be cleaned")
        self._masked = {
            0x50000000: profile.row_for(0x50000000),
            0x60003000: profile.row_for(0x60003000),
            0x60004000: profile.row_for(0x60004000),
        }
        self._enabled = enabled
        self._memo: dict[tuple[int, str, bool, bool], _Decision] = {}

    def decide(
        self, tag: int, vr: str, keyword: str, *, top: bool, cleaning: bool, creator: str | None
    ) -> _Decision:
        group = tag >> 16
        if group & 1:
            return self._private(tag, creator)
        key = (tag, vr, top, cleaning)
        decision = self._memo.get(key)
        if decision is None:
            decision = self._public(tag, vr, keyword, top=top, cleaning=cleaning)
            if keyword:  # dictionary tags only: made-up tags must not grow the memo
                self._memo[key] = decision
        return decision

    def _private(self, tag: int, creator: str | None) -> _Decision:
        if not self.options.retain_safe_private or creator is None:
            return _REMOVE_PRIVATE
        group, element = tag >> 16, tag & 0xFFFF
        if 0x0010 <= element <= 0x00FF:
            known = self._safe_private.knows_creator(group, creator)
            return _KEEP_SAFE_PRIVATE if known else _REMOVE_PRIVATE
        if element > 0x00FF and self._safe_private.allows(group, creator, element & 0xFF):
            return _KEEP_SAFE_PRIVATE
        return _REMOVE_PRIVATE

    def _public(self, tag: int, vr: str, keyword: str, *, top: bool, cleaning: bool) -> _Decision:
        group = tag >> 16
        options = self.options
        removed_because = _ALWAYS_REMOVED.get(tag)
        if removed_because is not None:
            return _Decision(Action.REMOVE, removed_because)
        if (group & 0xFF00) in (0x5000, 0x6000) and group <= (group & 0xFF00) + 0x1E:
            return self._graphics(tag, vr, group)
        if tag in (_PATIENT_ID, _ACCESSION_NUMBER) or (tag == _PATIENT_NAME and top):
            return _Decision(Action.PSEUDONYM, "keyed pseudonym")
        table = self._table.get(tag)
        if table is not None:
            if table.action is Action.CLEAN and vr in _BINARY_VRS:
                return self._uncleanable[tag]
            return table
        if not keyword or tag & 0xFFFF == 0:
            return _Decision(Action.REMOVE, "unknown or group length attribute")
        if vr == "UI":
            if options.retain_uids:
                return _Decision(Action.KEEP, "unlisted UID, Retain UIDs")
            if keyword in CLASS_UID_KEYWORDS:
                return _Decision(Action.KEEP, "class or scheme UID")
            return _Decision(Action.UID, "unlisted instance UID")
        if vr == "PN":
            return _Decision(Action.ZERO, "unlisted person name")
        if _CONTACT.search(keyword) or (_PERSON.search(keyword) and _IDENTIFYING.search(keyword)):
            return _Decision(Action.REMOVE, "unlisted identifying attribute")
        if vr in ("DA", "DT"):
            if options.retain_long_modified_dates:
                return _Decision(Action.CLEAN, "unlisted date, shifted")
            if options.retain_long_full_dates:
                return _Decision(Action.KEEP, "unlisted date, full dates retained")
            return _Decision(Action.ZERO, "unlisted date")
        if tag == _TEXT_VALUE:
            if cleaning:
                return _Decision(Action.CLEAN, "structured text", scrub=True)
            return _Decision(Action.REMOVE, "text value outside cleaned content")
        if cleaning and vr in _SCRUBBED_VRS and keyword not in _CODE_KEYWORDS:
            return _Decision(Action.CLEAN, "text in cleaned sequence", scrub=True)
        return _Decision(Action.KEEP, "not listed")

    def _graphics(self, tag: int, vr: str, group: int) -> _Decision:
        if not self.options.clean_graphics:
            return _Decision(Action.REMOVE, "curve or overlay group")
        masked_key = 0x50000000 if group & 0xFF00 == 0x5000 else 0x60000000 | (tag & 0xFFFF)
        row = self._masked.get(masked_key)
        if row is not None:
            code = row.code_for(self._enabled)
            action = resolve_code(code)
            return _Decision(action, f"table {code}", scrub=False)
        if vr in _SCRUBBED_VRS:
            return _Decision(Action.CLEAN, "curve or overlay text", scrub=True)
        return _Decision(Action.KEEP, "curve or overlay, Clean Graphics")


def _same(value: Any) -> Any:
    return value


def _copy_value(value: Any) -> Any:
    # MultiValue is a mutable list: share its items (immutable) but never the list itself.
    if isinstance(value, MultiValue):
        return MultiValue(_same, value)
    return value


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(item) for item in value]
    return [str(value)]


def _join(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _shift_date(text: str, days: int) -> str | None:
    """Shift a DA value; ``None`` when it is not a plain date (the caller blanks it)."""
    value = text.strip()
    if len(value) == 10 and value[4] == "." and value[7] == ".":  # ACR-NEMA YYYY.MM.DD
        value = value.replace(".", "")
    if len(value) != 8 or not value.isdigit():
        return None
    return _shift_parts(value[:4], value[4:6], value[6:8], days)


def _shift_parts(year: str, month: str | None, day: str | None, days: int) -> str | None:
    try:
        moved = date(int(year), int(month or 1), int(day or 1)) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    out = f"{moved.year:04d}"
    if month:
        out += f"{moved.month:02d}"
        if day:
            out += f"{moved.day:02d}"
    return out


def _shift_datetime(text: str, days: int) -> str | None:
    """Shift the date part of a DT value; time, fraction and offset are kept."""
    match = _DATE_TIME.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, rest = match.groups()
    if day is None and rest and not rest.startswith(("+", "-")):
        return None  # a time needs a full date before it: malformed
    shifted = _shift_parts(year, month, day, days)
    return None if shifted is None else shifted + rest


def _dummy(vr: str) -> Any:
    if vr in _DUMMY_TEXT:
        return _DUMMY_TEXT[vr]
    if vr in _NUMERIC_VRS or vr.startswith(("US", "SS")):
        return 0
    if vr in _BINARY_VRS or vr.startswith("O"):
        return b"\0" * 8
    return empty_value_for_VR(vr)


_KEYWORDS: dict[int, str] = {}  # tag -> dictionary keyword, for the tags of the dictionary met so far


def _keyword(tag: int) -> str:
    """pydicom's keyword for a public tag ("" when it has none), remembered for dictionary
    tags: the look-up converts the tag and searches the repeater groups on every call, and
    every element of every object asks for one. Tags without a keyword are not remembered,
    so objects full of made-up tags cannot grow the table."""
    keyword = _KEYWORDS.get(tag)
    if keyword is None:
        keyword = keyword_for_tag(tag)
        if keyword:
            _KEYWORDS[tag] = keyword
    return keyword


def _declared_vr(tag: int, item: Any, private: bool) -> str:
    """The VR an element will have once read, without converting its value.

    Implicit-VR files carry no VR, and explicit files may say UN for a public attribute:
    pydicom then uses the dictionary VR, and so must the decision (an unlisted PN stored
    as UN is still a person name).
    """
    vr = getattr(item, "VR", None)
    if vr and (vr != "UN" or private):
        return str(vr)
    if private:
        return "UN"
    try:
        return dictionary_VR(tag)
    except KeyError:
        return str(vr or "UN")


def _is_well_known_uid(uid: str) -> bool:
    return uid in UID_dictionary or uid.startswith(_DICOM_ROOT)


class _Scrubber:
    """Deletes identifying words from short text (see the module doc)."""

    def __init__(self, identifiers: Iterable[str]) -> None:
        tokens = sorted({token for token in identifiers if len(token) >= 2}, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t) for t in tokens) + r")(?!\w)", re.IGNORECASE)
            if tokens
            else None
        )

    def scrub(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(" ", text)
        text = _EMAIL.sub(" ", text)
        text = _NUMBERISH.sub(_drop_long_numbers, text)
        lines = (" ".join(line.split()) for line in text.splitlines())
        return "\n".join(line for line in lines if line)


def _drop_long_numbers(match: re.Match[str]) -> str:
    digits = sum(character.isdigit() for character in match.group())
    return " " if digits >= 5 else match.group()


_NAME_SPLIT = re.compile(r"[\^=\s,]+")
_IDENTIFIER_KEYWORDS = frozenset(
    {"PatientID", "OtherPatientIDs", "AccessionNumber", "IssuerOfPatientID", "AdmissionID", "StudyID"}
)


def _collect_identifiers(ds: Dataset, into: set[str]) -> None:
    # Decide from the tag and the VR first: only person names, identifiers and sequences are
    # decoded, so the other elements stay undecoded (and are copied as they are).
    for key in list(ds.keys()):
        tag = int(key)
        private = bool((tag >> 16) & 1)
        vr = _declared_vr(tag, ds.get_item(key), private)
        if vr == "SQ":
            for item in ds[key].value or ():
                _collect_identifiers(item, into)
        elif vr == "PN":
            for value in _values(ds[key].value):
                into.update(part for part in _NAME_SPLIT.split(value) if part)
        elif not private and _keyword(tag) in _IDENTIFIER_KEYWORDS:
            into.update(value.strip() for value in _values(ds[key].value) if value.strip())


class _ValueMaker:
    """Produces replacement values for one deidentify() call (knows the patient)."""

    def __init__(
        self,
        pseudonymizer: Pseudonymizer,
        uid_root: str,
        source: Dataset,
        pseudonym: str,
        shift_days: int | None,
    ) -> None:
        self._pseudonymizer = pseudonymizer
        self._uid_root = uid_root
        self._source = source
        self.pseudonym = pseudonym
        self.shift_days = shift_days
        self._scrubber: _Scrubber | None = None

    def uid(self, value: str) -> str:
        value = value.strip().rstrip("\0")
        if not value or _is_well_known_uid(value):
            return value
        return self._pseudonymizer.uid(value, self._uid_root)

    def scrub(self, text: str) -> str:
        if self._scrubber is None:
            identifiers: set[str] = set()
            _collect_identifiers(self._source, identifiers)
            self._scrubber = _Scrubber(identifiers)
        return self._scrubber.scrub(text)

    def pseudonym_for(self, tag: int, value: Any, *, top: bool) -> str:
        if top and tag in (_PATIENT_NAME, _PATIENT_ID):
            return self.pseudonym
        text = " ".join(_values(value)).strip()
        if tag == _ACCESSION_NUMBER:
            return self._pseudonymizer.accession(text)
        # A Patient ID inside a sequence: keyed on its own value, so it matches the top-level
        # pseudonym when it names the same patient.
        return self._pseudonymizer.patient(identity_basis(text, "", "")) if text else ""


class _Progress:
    """Where processing is, for an error message: a position, never a value."""

    __slots__ = ("path", "stage", "tag")

    def __init__(self) -> None:
        self.stage = "patient identity"
        self.path = ""
        self.tag: int | None = None

    def describe(self) -> str:
        if self.tag is None:
            return self.stage
        return f"{self.path or 'top level'} {Tag(self.tag)}"


class _Walker:
    """Walks a dataset depth-first, records decisions and (optionally) builds the output."""

    def __init__(self, rules: _Rules, maker: _ValueMaker | None, progress: _Progress) -> None:
        self._rules = rules
        self._maker = maker
        self._progress = progress
        self.actions: list[PlannedAction] = []

    def walk(self, source: Dataset, path: str, *, top: bool, cleaning: bool) -> Dataset:
        # Kept public elements still in their undecoded (raw) form are shared as they are, and
        # the output says it is encoded like the source: pydicom then writes those bytes back
        # without decoding and re-encoding them (it falls back to converting every element
        # when the output's transfer syntax or character set differs from the source's).
        # They go straight into the output's element mapping (``Dataset(mapping)``): adding
        # them one by one runs checks that only private elements and sequences need.
        shared: dict[BaseTag, DataElement | RawDataElement] = {}
        out = Dataset(shared)
        implicit, little = source.original_encoding
        out.set_original_encoding(implicit, little, source.original_character_set)
        progress = self._progress
        needs_creator = self._rules.options.retain_safe_private
        # Decide from the tag and the VR before reading the value: pydicom converts lazily-read
        # elements on access, and an attribute that is removed (most private ones) need never
        # be converted. The position is recorded first, so a conversion error names its tag.
        for key in sorted(source.keys()):
            tag = int(key)
            progress.path, progress.tag = path, tag
            private = bool((tag >> 16) & 1)
            keyword = "" if private else _keyword(tag)
            item = source.get_item(key)
            vr = _declared_vr(tag, item, private)
            creator = self._creator(source, tag) if private and needs_creator else None
            decision = self._rules.decide(tag, vr, keyword, top=top, cleaning=cleaning, creator=creator)
            self.actions.append(PlannedAction(path, tag, keyword, vr, decision.action, decision.reason))
            if decision.action is Action.REMOVE:
                continue
            if (
                self._maker is not None
                and isinstance(item, RawDataElement)
                and vr != "SQ"
                and _keeps_value(decision.action, vr)
                and _raw_is_sound(item, vr)
            ):
                if private:
                    out[key] = item  # pydicom records its private creator
                else:
                    shared[key] = item
                continue
            elem = source[key]
            if elem.VR == "SQ":
                self._sequence(out, elem, decision, path, cleaning)
            elif self._maker is not None:
                self._element(out, elem, decision, self._maker, top=top)
        return out

    @staticmethod
    def _creator(source: Dataset, tag: int) -> str | None:
        group, element = tag >> 16, tag & 0xFFFF
        if 0x0010 <= element <= 0x00FF:
            creator = source[tag]
        elif element > 0x00FF:
            creator = source.get(Tag(group, element >> 8))
        else:
            return None
        if creator is None:
            return None
        return str(creator.value or "").strip()

    def _sequence(
        self, out: Dataset, elem: DataElement, decision: _Decision, path: str, cleaning: bool
    ) -> None:
        action = decision.action
        if action in (Action.ZERO, Action.DUMMY, Action.PSEUDONYM):
            out.add(DataElement(elem.tag, "SQ", DicomSequence()))
            return
        name = elem.keyword or str(Tag(elem.tag))
        prefix = f"{path}." if path else ""
        items = [
            self.walk(
                item,
                f"{prefix}{name}[{index}]",
                top=False,
                cleaning=cleaning or action is Action.CLEAN,
            )
            for index, item in enumerate(elem.value or ())
        ]
        out.add(
            DataElement(elem.tag, "SQ", DicomSequence(items), is_undefined_length=elem.is_undefined_length)
        )

    def _element(
        self, out: Dataset, elem: DataElement, decision: _Decision, maker: _ValueMaker, *, top: bool
    ) -> None:
        action, vr, tag = decision.action, elem.VR, elem.tag
        if _keeps_value(action, vr):
            copied = DataElement(
                tag,
                vr,
                _copy_value(elem.value),
                is_undefined_length=elem.is_undefined_length,
                already_converted=True,
            )
            copied.private_creator = elem.private_creator
            out.add(copied)
            return
        value: Any
        if action is Action.ZERO or (action is Action.CLEAN and vr == "PN"):
            value = empty_value_for_VR(vr)
        elif action is Action.PSEUDONYM:
            value = maker.pseudonym_for(tag, elem.value, top=top)
        elif vr == "UI":  # U, or D on a UID: the consistent replacement
            value = _join([maker.uid(v) for v in _values(elem.value)]) if elem.value else elem.value
        elif action is Action.DUMMY or action is Action.UID:
            value = _dummy(vr)
        else:
            value = self._clean(elem, decision, maker)
        # No validation: pydicom's validation warnings quote the value, and a value derived
        # from an invalid original (a scrubbed over-long text) would end up in the logs.
        out.add(DataElement(tag, vr, value, validation_mode=config.IGNORE))

    @staticmethod
    def _clean(elem: DataElement, decision: _Decision, maker: _ValueMaker) -> Any:
        vr = elem.VR
        values = _values(elem.value)
        if vr in ("DA", "DT"):
            days = maker.shift_days
            if days is None:
                return empty_value_for_VR(vr)
            shift = _shift_date if vr == "DA" else _shift_datetime
            shifted = [s for s in (shift(v, days) for v in values) if s is not None]
            return _join(shifted) if shifted else empty_value_for_VR(vr)
        if not decision.scrub and vr in _FREE_TEXT_VRS:
            return REMOVED_TEXT if any(v.strip() for v in values) else empty_value_for_VR(vr)
        cleaned = [maker.scrub(v) for v in values]
        return _join(cleaned) if cleaned else empty_value_for_VR(vr)


def _keeps_value(action: Action, vr: str) -> bool:
    """The element is copied unchanged: kept, or cleaned but of a VR cleaning leaves alone."""
    return action is Action.KEEP or (action is Action.CLEAN and vr not in _CLEANED_VRS)


_VALUE_SIZES = {"US": 2, "SS": 2, "OW": 2, "AT": 4, "UL": 4, "SL": 4, "FL": 4, "OF": 4, "OL": 4}
_VALUE_SIZES |= {"FD": 8, "OD": 8, "OV": 8, "SV": 8, "UV": 8}


def _raw_is_sound(raw: RawDataElement, vr: str) -> bool:
    """An undecoded value whose length fits its VR (even, whole values); anything else takes
    the decoding path, which fails closed on a malformed value instead of copying it."""
    if raw.length == 0xFFFFFFFF:  # undefined length: only encapsulated pixel data is copied raw
        return raw.tag == 0x7FE00010
    return raw.length % _VALUE_SIZES.get(vr, 2) == 0


def _syntax_from_encoding(source: Dataset) -> str | None:
    """A transfer syntax for a dataset whose file meta names none (e.g. read without meta).

    Native (unencapsulated) data can be written in the syntax it was read with, or Explicit
    VR Little Endian when it was built in memory; encapsulated pixel data cannot be
    re-labelled, so ``None`` then.
    """
    pixels = source.get_item(0x7FE00010)
    if pixels is not None and pixels.is_undefined_length:
        return None
    implicit, little = source.original_encoding
    if implicit is None or little is None:
        return ExplicitVRLittleEndian
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _meta_decision(keyword: str, options: DeidOptions) -> _Decision:
    if keyword == "MediaStorageSOPInstanceUID":
        if options.retain_uids:
            return _Decision(Action.KEEP, "table U, Retain UIDs")
        return _Decision(Action.UID, "table U")
    if keyword in ("ImplementationClassUID", "ImplementationVersionName"):
        return _Decision(Action.DUMMY, "IRMSIA implementation")
    if keyword in ("FileMetaInformationGroupLength", "FileMetaInformationVersion", "TransferSyntaxUID"):
        return _Decision(Action.KEEP, "file meta structure")
    if keyword == "MediaStorageSOPClassUID":
        return _Decision(Action.KEEP, "class UID")
    return _Decision(Action.REMOVE, "file meta: not rewritten")


def _plan_meta(ds: Dataset, options: DeidOptions) -> list[PlannedAction]:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return []
    planned = []
    for key in sorted(meta.keys()):  # from tag and VR: the values need not be decoded
        tag = int(key)
        keyword = _keyword(tag)
        decision = _meta_decision(keyword, options)
        vr = _declared_vr(tag, meta.get_item(key), False)
        planned.append(PlannedAction("file_meta", tag, keyword, vr, decision.action, decision.reason))
    return planned


def _text_of(ds: Dataset, tag: int) -> str:
    elem = ds.get(tag)
    if elem is None or elem.value is None:
        return ""
    return " ".join(_values(elem.value)).strip()


class Deidentifier:
    """De-identifies datasets with one set of options and one secret key.

    Build it once (it parses the profile table and prepares the keyed hashes) and call
    ``deidentify`` per object; it is safe to share between threads. ``uid_root`` prefixes
    replacement UIDs (``2.25`` by default: UUID-derived UIDs). Raises ``ConfigError`` for a
    short key or an invalid root. ``profile`` and ``safe_private`` default to the packaged
    tables.
    """

    def __init__(
        self,
        options: DeidOptions,
        secret_key: bytes,
        *,
        uid_root: str = "2.25",
        profile: ConfidentialityProfile | None = None,
        safe_private: SafePrivateList | None = None,
    ) -> None:
        Pseudonymizer.check_uid_root(uid_root)
        self._options = options
        self._pseudonymizer = Pseudonymizer(secret_key)
        self._uid_root = uid_root
        self._rules = _Rules(
            options,
            profile if profile is not None else load_profile(),
            safe_private if safe_private is not None else load_safe_private(),
        )
        enabled = options.enabled()
        self._method_description = tuple(options.method_description())
        self._method_codes = tuple(
            (value, meaning)
            for option, value, meaning in _METHOD_CODES
            if option is None or option in enabled
        )

    @property
    def options(self) -> DeidOptions:
        return self._options

    def deidentify(self, ds: Dataset, *, pixels_cleaned: bool = False) -> DeidResult:
        """A de-identified copy of ``ds`` (``ds`` itself is left unchanged).

        ``pixels_cleaned=True`` tells that the caller masked burned-in text in the pixel
        data (see ``mask_regions``): the Clean Pixel Data Option code is added and Burned In
        Annotation becomes ``NO``. Raises ``DeidentificationError`` (no values in the
        message) when the dataset cannot be processed.
        """
        progress = _Progress()
        try:
            return self._deidentify(ds, pixels_cleaned, progress)
        except _PROCESSING_ERRORS as exc:
            raise DeidentificationError(
                f"de-identification failed at {progress.describe()} ({type(exc).__name__})"
            ) from None

    def _deidentify(self, ds: Dataset, pixels_cleaned: bool, progress: _Progress) -> DeidResult:
        patient_name = _text_of(ds, _PATIENT_NAME)
        patient_id = _text_of(ds, _PATIENT_ID)
        birth_date = _text_of(ds, _PATIENT_BIRTH_DATE)
        accession = _text_of(ds, _ACCESSION_NUMBER)
        basis = identity_basis(patient_id, patient_name, birth_date)
        pseudonym = self._pseudonymizer.patient(basis)
        shift = (
            self._pseudonymizer.date_shift_days(basis) if self._options.retain_long_modified_dates else None
        )
        maker = _ValueMaker(self._pseudonymizer, self._uid_root, ds, pseudonym, shift)
        walker = _Walker(self._rules, maker, progress)
        out = walker.walk(ds, "", top=True, cleaning=False)
        progress.stage, progress.tag = "file meta", None
        meta_actions = _plan_meta(ds, self._options)
        out.file_meta = self._file_meta(ds, out, maker)
        progress.stage = "de-identification attributes"
        self._finish(out, pseudonym, pixels_cleaned=pixels_cleaned)
        identity = IdentityRecord(
            pseudonym=pseudonym,
            pseudonymised_accession=self._pseudonymizer.accession(accession),
            patient_name=patient_name,
            patient_id=patient_id,
            patient_birth_date=birth_date,
            accession_number=accession,
            date_shift_days=shift,
        )
        return DeidResult(
            dataset=out,
            pseudonym=pseudonym,
            identity=identity,
            actions=tuple(meta_actions + walker.actions),
        )

    def _file_meta(self, source: Dataset, out: Dataset, maker: _ValueMaker) -> FileMetaDataset:
        source_meta = getattr(source, "file_meta", None) or FileMetaDataset()
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        sop_class = out.get("SOPClassUID") or source_meta.get("MediaStorageSOPClassUID")
        if sop_class:
            meta.MediaStorageSOPClassUID = sop_class
        sop_instance = str(out.get("SOPInstanceUID") or "")
        if not sop_instance and source_meta.get("MediaStorageSOPInstanceUID"):
            original = str(source_meta.MediaStorageSOPInstanceUID)
            sop_instance = original if self._options.retain_uids else maker.uid(original)
        if sop_instance:
            meta.add_new(0x00020003, "UI", sop_instance)
        syntax = source_meta.get("TransferSyntaxUID") or _syntax_from_encoding(source)
        if syntax:
            meta.add_new(0x00020010, "UI", syntax)
        meta.add_new(0x00020012, "UI", IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        return meta

    def _finish(self, out: Dataset, pseudonym: str, *, pixels_cleaned: bool) -> None:
        # Elements built with their tag and VR (``add_new``): assigning by keyword looks the
        # keyword up in the dictionary each time, and every object pays for these.
        options = self._options
        if _PATIENT_NAME not in out:
            out.add_new(_PATIENT_NAME, "PN", pseudonym)
        if _PATIENT_ID not in out:
            out.add_new(_PATIENT_ID, "LO", pseudonym)
        out.add_new(0x00120062, "CS", "YES")  # Patient Identity Removed
        out.add_new(0x00120063, "LO", list(self._method_description))  # De-identification Method
        codes = list(self._method_codes)
        if pixels_cleaned:
            codes.insert(1, _CLEAN_PIXEL_DATA)
            out.add_new(0x00280301, "CS", "NO")  # Burned In Annotation
        # Code Value, Coding Scheme Designator, Code Meaning: constants, so built unvalidated
        # into each item's element mapping.
        items = [
            Dataset(
                {
                    _CODE_VALUE: DataElement(_CODE_VALUE, "SH", value, validation_mode=config.IGNORE),
                    _CODING_SCHEME: DataElement(_CODING_SCHEME, "SH", "DCM", validation_mode=config.IGNORE),
                    _CODE_MEANING: DataElement(_CODE_MEANING, "LO", meaning, validation_mode=config.IGNORE),
                }
            )
            for value, meaning in codes
        ]
        # De-identification Method Code Sequence
        out.add_new(0x00120064, "SQ", DicomSequence(items))
        if options.retain_long_modified_dates:
            modified = "MODIFIED"
        elif options.retain_long_full_dates:
            modified = "UNMODIFIED"
        else:
            modified = "REMOVED"
        out.add_new(0x00280303, "CS", modified)  # Longitudinal Temporal Information Modified
        out.preamble = b"\0" * 128


def what_if(
    ds: Dataset,
    options: DeidOptions,
    *,
    profile: ConfidentialityProfile | None = None,
    safe_private: SafePrivateList | None = None,
) -> list[PlannedAction]:
    """The action ``Deidentifier.deidentify`` would take on each attribute present.

    Same decisions, no key needed and no value computed or returned: safe to print, e.g.
    for ``irmsia deid --what-if FILE``. Sequence items are listed with their path. Raises
    ``DeidentificationError`` like ``deidentify`` when the dataset cannot be walked.
    """
    rules = _Rules(
        options,
        profile if profile is not None else load_profile(),
        safe_private if safe_private is not None else load_safe_private(),
    )
    progress = _Progress()
    walker = _Walker(rules, None, progress)
    try:
        walker.walk(ds, "", top=True, cleaning=False)
        progress.stage, progress.tag = "file meta", None
        return _plan_meta(ds, options) + walker.actions
    except _PROCESSING_ERRORS as exc:
        raise DeidentificationError(
            f"what-if failed at {progress.describe()} ({type(exc).__name__})"
        ) from None


# --- Burned-in annotations -------------------------------------------------------------

# Without an explicit Burned In Annotation (0028,0301) these are presumed to carry text in
# their pixels: ultrasound, angiography and fluoroscopy (operator labels), endoscopy,
# photography and microscopy (captured screens, slide labels), secondary captures and
# scanned documents.
SUSPECT_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "OP", "SM", "OT", "DOC"})
SUSPECT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
        "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image Storage
        "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.2",  # VL Microscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.5.2",  # Ophthalmic Photography 16 Bit Image Storage
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF Storage
        "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA Storage
    }
)


class BurnedInPolicy(StrEnum):
    """What to do with an object that may show patient text in its pixels."""

    REJECT = "reject"
    QUARANTINE = "quarantine"
    MASK = "mask"


class BurnedInDecision(StrEnum):
    """The outcome for one object; the caller acts on it."""

    ACCEPT = "accept"
    REJECT = "reject"
    QUARANTINE = "quarantine"
    MASK = "mask"


class Region(NamedTuple):
    """A rectangle in pixels: left column, top row, width, height."""

    x: int
    y: int
    width: int
    height: int


def burned_in_risk(ds: Dataset) -> bool:
    """Whether ``ds`` may carry burned-in identifying text.

    True when Burned In Annotation (0028,0301) is ``YES``; False when it is ``NO``; when it
    is absent or empty, True for the modalities in ``SUSPECT_MODALITIES`` and the SOP
    classes in ``SUSPECT_SOP_CLASSES``.
    """
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return True
    if flag == "NO":
        return False
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    return modality in SUSPECT_MODALITIES or sop_class in SUSPECT_SOP_CLASSES


def decide_burned_in(
    ds: Dataset, policy: BurnedInPolicy, *, regions: Sequence[Region] = ()
) -> BurnedInDecision:
    """What to do with ``ds`` under ``policy``; the caller rejects, quarantines or masks.

    MASK needs known regions and pixel data: without them the object is quarantined
    rather than accepted unmasked.
    """
    if not burned_in_risk(ds):
        return BurnedInDecision.ACCEPT
    if policy is BurnedInPolicy.REJECT:
        return BurnedInDecision.REJECT
    if policy is BurnedInPolicy.MASK and regions and "PixelData" in ds:
        return BurnedInDecision.MASK
    return BurnedInDecision.QUARANTINE


def mask_regions(
    pixels: np.ndarray,
    regions: Iterable[tuple[int, int, int, int]],
    *,
    frames: int = 1,
    fill: float = 0,
) -> np.ndarray:
    """A copy of ``pixels`` with every region set to ``fill`` in every frame.

    ``pixels`` is laid out as pydicom's ``pixel_array``: (rows, columns[, samples]) for one
    frame, (frames, rows, columns[, samples]) when ``frames`` > 1. Regions are clipped to
    the image; a region with no positive size or entirely outside the image raises
    ``InvalidRequest`` (a silent no-op would leave text unmasked).
    """
    row_axis = 1 if frames > 1 else 0
    if pixels.ndim < row_axis + 2:
        raise InvalidRequest("pixel array has fewer dimensions than its frame count implies")
    rows, columns = pixels.shape[row_axis], pixels.shape[row_axis + 1]
    masked = pixels.copy()
    for region in regions:
        x, y, width, height = (int(v) for v in region)
        if width <= 0 or height <= 0:
            raise InvalidRequest("mask region needs a positive width and height")
        left, top = max(x, 0), max(y, 0)
        right, bottom = min(x + width, columns), min(y + height, rows)
        if left >= right or top >= bottom:
            raise InvalidRequest("mask region lies outside the image")
        if frames > 1:
            masked[:, top:bottom, left:right, ...] = fill
        else:
            masked[top:bottom, left:right, ...] = fill
    return masked
