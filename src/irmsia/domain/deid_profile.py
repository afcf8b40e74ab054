"""DICOM PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes) as data.

The table lives in ``data/annex_e.csv``, transcribed from the standard (from the
machine-readable copy of PS3.15 published by the innolitics/dicom-standard project; 460
rows, every tag checked against pydicom's data dictionary): one row per attribute, with its
Basic Profile action and its action under each option column. Action codes are the
standard's: D (dummy), Z (zero length or dummy), X (remove), K (keep), C (clean), U (replace
UID), and combinations such as ``X/Z/D`` or ``X/Z/U*``. Three rows use masks:
``(50xx,xxxx)`` curve data, ``(60xx,3000)`` overlay data, ``(60xx,4000)`` overlay comments;
``(gggg,eeee)`` stands for every private attribute (odd group).

``data/safe_private.json`` is the allow-list used by the Retain Safe Private option.

Both files are parsed once per process (``load_profile``/``load_safe_private`` cache their
result); the parsed objects are immutable and safe to share between threads.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from types import MappingProxyType

from irmsia.errors import ConfigError

__all__ = [
    "Action",
    "ConfidentialityProfile",
    "Option",
    "ProfileRow",
    "SafePrivateAttribute",
    "SafePrivateList",
    "load_profile",
    "load_safe_private",
    "parse_profile",
    "parse_safe_private",
    "resolve_code",
]


class Option(StrEnum):
    """The option columns of Table E.1-1; values are the CSV column names."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONG_FULL_DATES = "retain_long_full_dates"
    RETAIN_LONG_MODIFIED_DATES = "retain_long_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"


class Action(StrEnum):
    """One resolved action. ``P`` is IRMSIA's: a D whose value is a keyed pseudonym."""

    REMOVE = "X"
    ZERO = "Z"
    DUMMY = "D"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"
    PSEUDONYM = "P"


_CODES = frozenset({"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})
_HEADER = ("tag", "name", "basic", *(option.value for option in Option))
# When two enabled options both name an action for one attribute, the more retaining one
# wins: an option never takes away what another option explicitly keeps.
_OPTION_RANK = {"K": 0, "C": 1, "U": 2, "D": 3, "Z": 4, "X": 5}


def resolve_code(code: str) -> Action:
    """One action for a table code, compound codes included.

    We do not know which IOD (and so which attribute Type) a dataset follows, so a compound
    code resolves to the choice that keeps the attribute present without keeping its
    value: ``X/Z``, ``X/Z/D`` and ``Z/D`` give Z (zero length satisfies Type 2 and 3),
    ``X/D`` gives D (the standard offers no zero length there, which signals Type 1 somewhere),
    and ``X/Z/U*`` gives U (keep the reference sequence, replace every UID inside it) so that
    references between de-identified objects stay consistent. None of these keep any
    original value.
    """
    if code == "X/Z/U*":
        return Action.UID
    parts = code.split("/")
    if len(parts) == 1:
        return Action(parts[0])
    if "Z" in parts:
        return Action.ZERO
    return Action.DUMMY


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One row of Table E.1-1, with its codes exactly as the standard writes them."""

    tag: str
    name: str
    basic: str
    options: Mapping[Option, str]

    def code_for(self, enabled: Iterable[Option]) -> str:
        """The code that applies with these options enabled (the Basic Profile's otherwise)."""
        chosen = [self.options[option] for option in enabled if option in self.options]
        if not chosen:
            return self.basic
        return min(chosen, key=_OPTION_RANK.__getitem__)


def _parse_tag(text: str) -> tuple[int, int]:
    """``(gggg,eeee)`` with ``x`` for any hex digit → (value, mask)."""
    if len(text) != 11 or text[0] != "(" or text[5] != "," or text[10] != ")":
        raise ConfigError("confidentiality profile: malformed tag in the table")
    digits = text[1:5] + text[6:10]
    value = mask = 0
    for digit in digits:
        value <<= 4
        mask <<= 4
        if digit in "xX":
            continue
        value |= int(digit, 16)
        mask |= 0xF
    return value, mask


class ConfidentialityProfile:
    """The parsed table: look rows up by tag, masks and private attributes included."""

    PRIVATE_TAG = "(gggg,eeee)"

    def __init__(self, rows: Iterable[ProfileRow]) -> None:
        self._rows = tuple(rows)
        exact: dict[int, ProfileRow] = {}
        masked: list[tuple[int, int, ProfileRow]] = []
        private: ProfileRow | None = None
        for row in self._rows:
            if row.tag == self.PRIVATE_TAG:
                private = row
                continue
            value, mask = _parse_tag(row.tag)
            if mask == 0xFFFFFFFF:
                exact[value] = row
            else:
                masked.append((value, mask, row))
        if private is None:
            raise ConfigError("confidentiality profile: the private attributes row is missing")
        self._exact = MappingProxyType(exact)
        self._masked = tuple(masked)
        self._private = private

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> tuple[ProfileRow, ...]:
        return self._rows

    @property
    def exact_rows(self) -> Mapping[int, ProfileRow]:
        """Rows that name a single tag, keyed by the tag as an int."""
        return self._exact

    @property
    def private_row(self) -> ProfileRow:
        return self._private

    def row_for(self, tag: int) -> ProfileRow | None:
        """The row governing ``tag``: exact, then private (odd group), then masked rows."""
        row = self._exact.get(tag)
        if row is not None:
            return row
        if (tag >> 16) & 1:
            return self._private
        for value, mask, masked_row in self._masked:
            if tag & mask == value:
                return masked_row
        return None


def parse_profile(text: str) -> ConfidentialityProfile:
    """Parse the CSV form of Table E.1-1. Raises ``ConfigError`` on any malformed row."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != _HEADER:
        raise ConfigError("confidentiality profile: unexpected table header")
    rows = []
    for number, record in enumerate(reader, start=2):
        if len(record) != len(_HEADER):
            raise ConfigError(f"confidentiality profile: line {number} has the wrong number of fields")
        tag, name, basic, *option_codes = record
        if basic not in _CODES:
            raise ConfigError(f"confidentiality profile: line {number} has an unknown action")
        options = {}
        for option, code in zip(Option, option_codes, strict=True):
            if not code:
                continue
            if code not in _OPTION_RANK:
                raise ConfigError(f"confidentiality profile: line {number} has an unknown option action")
            options[option] = code
        rows.append(ProfileRow(tag=tag, name=name, basic=basic, options=MappingProxyType(options)))
    return ConfidentialityProfile(rows)


@functools.cache
def load_profile() -> ConfidentialityProfile:
    """The packaged Table E.1-1, parsed once per process."""
    text = resources.files("irmsia.domain").joinpath("data/annex_e.csv").read_text(encoding="utf-8")
    return parse_profile(text)


@dataclass(frozen=True, slots=True)
class SafePrivateAttribute:
    """One private attribute known to carry no identity (PS3.15 E.3.10)."""

    group: int
    creator: str
    offset: int
    vr: str
    name: str


class SafePrivateList:
    """Allow-list for Retain Safe Private: (group, Private Creator, element offset)."""

    def __init__(self, attributes: Iterable[SafePrivateAttribute]) -> None:
        self._attributes = tuple(attributes)
        self._keys = frozenset((a.group, a.creator, a.offset) for a in self._attributes)
        self._creators = frozenset((a.group, a.creator) for a in self._attributes)

    def __len__(self) -> int:
        return len(self._attributes)

    @property
    def attributes(self) -> tuple[SafePrivateAttribute, ...]:
        return self._attributes

    def allows(self, group: int, creator: str, offset: int) -> bool:
        """Whether element ``offset`` (low byte) of ``creator``'s block in ``group`` is safe."""
        return (group, creator.strip(), offset) in self._keys

    def knows_creator(self, group: int, creator: str) -> bool:
        """Whether ``creator`` in ``group`` has at least one safe element."""
        return (group, creator.strip()) in self._creators


def parse_safe_private(text: str) -> SafePrivateList:
    """Parse the JSON allow-list. Raises ``ConfigError`` on malformed entries."""
    try:
        document = json.loads(text)
        attributes = [
            SafePrivateAttribute(
                group=int(entry["group"], 16),
                creator=str(entry["creator"]).strip(),
                offset=int(entry["offset"], 16),
                vr=str(entry["vr"]),
                name=str(entry["name"]),
            )
            for entry in document["attributes"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError("safe private list: malformed entry") from exc
    for attribute in attributes:
        if not attribute.group & 1 or not 0 <= attribute.offset <= 0xFF:
            raise ConfigError("safe private list: entries need an odd group and a one-byte offset")
    return SafePrivateList(attributes)


@functools.cache
def load_safe_private() -> SafePrivateList:
    """The packaged safe private allow-list, parsed once per process."""
    text = resources.files("irmsia.domain").joinpath("data/safe_private.json").read_text(encoding="utf-8")
    return parse_safe_private(text)
