"""Every row of PS3.15 Table E.1-1 (``data/annex_e.csv``) gets its action, at the top level and
inside a nested sequence item, with no options, with the deployment's default options and
with each option column on its own.

For each row a value is planted in the attribute (a value of the attribute's VR that carries
canaries: a person's name, a long number), the dataset is de-identified, and the outcome is
checked against the row's code for the enabled options (the Basic Profile column when no
enabled option names the attribute):

* ``X`` removed; ``Z`` present, empty or a dummy; ``D`` present, a non-empty dummy of the same
  VR that is not the original (a sequence is emptied: it can get no generic dummy item);
  ``K`` kept (a sequence keeps its items, which are walked with the same rules);
  ``U`` a replacement UID, the same at every depth and from a second de-identifier with the
  same key (a ``U*`` sequence keeps its items with every instance UID replaced);
  ``C`` cleaned: dates moved by the patient's one offset, text without the canaries,
  sequences walked as cleaned content; compound codes (``X/Z/D`` …) accept any of their parts.

The expectations here are written from the standard, not from the implementation's tables;
where IRMSIA interprets ``C`` for a VR it cannot clean, the interpretation is listed with its
reason in the comment above ``TIMEZONE_OFFSET``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import pytest
from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from irmsia.config import Settings
from irmsia.domain.deid import Deidentifier, DeidOptions
from irmsia.domain.deid_profile import Option, ProfileRow, load_profile

KEY = b"every-row-test-key-0123456789abcdef"
PROFILE = load_profile()
CONTAINER = 0x00081115  # Referenced Series Sequence: not in the table, so kept and walked
NAME = "Canaryname^Zelda"
CANARIES = ("canaryname", "zelda", "12345", "canarybinary", "canaryprivate")
# Text: a name, a long number and one harmless word, different in every row (identifiers such
# as Patient ID are deleted from other text as whole values: equal texts would delete each other).
TEXT_VRS = ("LO", "SH", "ST", "LT", "UT", "UC")
ORIGINAL_DATE = "20240105"
ORIGINAL_TIME = "101500"
BINARY = b"CANARYBINARY1234"
SAFE_PRIVATE = (0x0019, "GEMS_ACQU_01", 0x23)  # on the packaged safe-private allow-list
UID_PATTERN = re.compile(r"^2\.25\.[1-9][0-9]*$")

# C on a VR that cannot be cleaned in place: what IRMSIA does instead, and why.
# * TM (Modified Dates): dates move by whole days, so the time of day is kept; so is the
#   Timezone Offset From UTC, an offset of those times.
# * Opaque bytes of a table row (Maker Note, Device Setting Description, Frame Origin
#   Timestamp): they cannot be cleaned, so the Basic Profile action applies.
# * Curve and overlay bitmaps (Clean Graphics) are kept like pixel data: burned-in text in
#   pixels is the burned-in policy's business, not the de-identifier's.
# * Private attributes (Retain Safe Private): allow-listed ones kept, all others removed.
TIMEZONE_OFFSET = 0x00080201
GRAPHICS_ROWS = frozenset({"(50xx,xxxx)", "(60xx,3000)"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})


def _default_options() -> DeidOptions:
    names = str(Settings.model_fields["DEID_OPTIONS"].default).split(",")
    return DeidOptions(**{name: True for name in names if name})


CASES: dict[str, DeidOptions] = {
    "no options": DeidOptions(),
    "default options": _default_options(),
    **{f"only {option.value}": DeidOptions(**{option.value: True}) for option in Option},
}


@dataclass(frozen=True)
class Plant:
    """One attribute planted for one row: where, with which VR and value."""

    row: ProfileRow
    tag: int
    vr: str
    value: Any
    in_meta: bool = False
    nested: bool = True


def _vr(tag: int) -> str:
    return dictionary_VR(tag).split(" or ")[0]


def _uid_for(number: int) -> str:
    return f"1.2.826.0.1.3680043.10.999.{number}"


def _sequence_item(uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage  # a class UID: kept
    item.ReferencedSOPInstanceUID = uid  # U wherever it is
    item.CodeValue = "T-D3000"  # codes are vocabulary: kept, also in cleaned content
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Chest"
    item.TextValue = "Zelda 1234567 lesion"  # removed outside cleaned content, scrubbed inside
    return item


def _text(number: int) -> str:
    return f"Zelda 12345 w{number}"  # at most 16 characters: valid for SH too


def _value(tag: int, vr: str, number: int) -> Any:
    if tag == TIMEZONE_OFFSET:
        return "+0100"
    if vr == "UI":
        return _uid_for(number)
    if vr == "SQ":
        return [_sequence_item(_uid_for(number))]
    if vr in TEXT_VRS:
        return _text(number)
    fixed: dict[str, Any] = {
        "PN": NAME,
        "DA": ORIGINAL_DATE,
        "DT": ORIGINAL_DATE + ORIGINAL_TIME,
        "TM": ORIGINAL_TIME,
        "AS": "045Y",
        "AE": "CANARYAE",
        "CS": "CANARY_CS",
        "DS": "12.5",
        "IS": "42",
        "FL": 7.5,
        "FD": 7.5,
    }
    if vr in fixed:
        return fixed[vr]
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 7
    return BINARY  # OB, OW, OD, OF, OL, OV, UN


def _plants() -> list[Plant]:
    plants = []
    for number, row in enumerate(PROFILE.rows, start=1):
        if row.tag == PROFILE.PRIVATE_TAG:
            plants.append(Plant(row, 0x00091001, "LO", _text(number)))  # unsafe private element
            group, _, offset = SAFE_PRIVATE
            plants.append(Plant(row, (group << 16) | 0x1000 | offset, "DS", "1.5"))
            continue
        if row.tag == "(50xx,xxxx)":  # every element of a curve group
            plants.append(Plant(row, 0x50003000, "OB", BINARY))
            plants.append(Plant(row, 0x50020022, "LO", _text(number)))
            continue
        if row.tag == "(60xx,3000)":
            plants.append(Plant(row, 0x60003000, "OW", BINARY))
            plants.append(Plant(row, 0x60023000, "OW", BINARY))
            continue
        if row.tag == "(60xx,4000)":
            plants.append(Plant(row, 0x60004000, "LT", _text(number)))
            continue
        tag = int(row.tag[1:5] + row.tag[6:10], 16)
        vr = _vr(tag)
        in_meta = tag >> 16 == 0x0002
        plants.append(Plant(row, tag, vr, _value(tag, vr, number), in_meta=in_meta, nested=not in_meta))
    # As in every real file, the file meta names the same instance as SOP Instance UID.
    sop_instance = next(plant for plant in plants if plant.tag == 0x00080018)
    return [
        replace(plant, value=sop_instance.value) if plant.tag == 0x00020003 else plant for plant in plants
    ]


PLANTS = _plants()


def _add(ds: Dataset, plant: Plant) -> None:
    value = plant.value
    if plant.vr == "SQ":
        value = Sequence([_copy_item(item) for item in value])
    ds.add(DataElement(plant.tag, plant.vr, value, validation_mode=config.IGNORE))


def _copy_item(item: Dataset) -> Dataset:
    copy = Dataset()
    for elem in item:
        copy.add(DataElement(elem.tag, elem.VR, elem.value))
    return copy


def _planted_dataset() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    nested = Dataset()
    for plant in PLANTS:
        if plant.tag >> 16 & 1 and (plant.tag & 0xFF00) == 0x1000:
            creator_tag = (plant.tag & 0xFFFF0000) | ((plant.tag >> 8) & 0xFF)
            creator = "CANARYPRIVATE" if plant.tag >> 16 == 0x0009 else SAFE_PRIVATE[1]
            for target in (ds, nested):
                target.add(DataElement(creator_tag, "LO", creator))
        if plant.in_meta:
            _add(ds.file_meta, plant)
            continue
        _add(ds, plant)
        if plant.nested:
            _add(nested, plant)
    ds.add(DataElement(CONTAINER, "SQ", Sequence([nested])))
    return ds


# --- outcomes --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of one planted attribute, and the context needed to judge it."""

    plant: Plant
    where: str
    elem: DataElement | None
    second: DataElement | None  # the same attribute from a second de-identifier
    top: Dataset  # the de-identified top-level dataset
    shifts: set[int]


def _canary_free(value: Any) -> bool:
    text = (value.decode("latin-1") if isinstance(value, bytes) else str(value)).lower()
    return not any(canary in text for canary in CANARIES)


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == b"" or (isinstance(value, list | Sequence) and not value)


def _is_replacement_uid(outcome: Outcome, original: str, replaced: Any) -> bool:
    second = outcome.second.value if outcome.second is not None else None
    return (
        isinstance(replaced, str)
        and replaced != original
        and UID_PATTERN.fullmatch(replaced) is not None
        and len(replaced) <= 64
        and replaced == second
    )


def removed(outcome: Outcome) -> str | None:
    return None if outcome.elem is None else "still present"


def zeroed(outcome: Outcome) -> str | None:
    elem = outcome.elem
    if elem is None:
        return "removed"
    if _is_empty(elem.value):
        return None
    return dummy(outcome)


def dummy(outcome: Outcome) -> str | None:
    elem, plant = outcome.elem, outcome.plant
    if elem is None:
        return "removed"
    if plant.vr != elem.VR:
        return f"VR {elem.VR}"
    if plant.vr == "SQ":
        return (
            None
            if _canary_free(_flatten(elem.value)) and not _has_original_uid(elem, plant)
            else "kept content"
        )
    if _is_empty(elem.value):
        return "empty"
    if elem.value == plant.value or str(elem.value) == str(plant.value):
        return "kept the original"
    if not _canary_free(elem.value):
        return "a canary survived"
    return None


def kept(outcome: Outcome) -> str | None:
    elem, plant = outcome.elem, outcome.plant
    if elem is None:
        return "removed"
    if plant.vr == "SQ":
        if len(elem.value) != 1 or elem.value[0].get("CodeValue") != "T-D3000":
            return "sequence items not kept"
        return None
    if elem.value != plant.value and str(elem.value) != str(plant.value):
        return "changed"
    return None


def uid_replaced(outcome: Outcome) -> str | None:
    elem, plant = outcome.elem, outcome.plant
    if elem is None:
        return "removed"
    if plant.vr == "SQ":  # U*: the items stay, every instance UID in them is replaced
        if not elem.value:
            return "emptied"
        inner = elem.value[0].get("ReferencedSOPInstanceUID")
        original = plant.value[0].ReferencedSOPInstanceUID
        expected = outcome.top.get("ReferencedSOPInstanceUID")  # the same original, at the top
        if inner in (None, original) or inner != (expected.value if expected is not None else None):
            return "references not replaced consistently"
        if elem.value[0].get("ReferencedSOPClassUID") != CTImageStorage:
            return "class UID changed"
        return None
    if not _is_replacement_uid(outcome, str(plant.value), elem.value):
        return "not a consistent replacement UID"
    return None


def cleaned(outcome: Outcome) -> str | None:
    elem, plant = outcome.elem, outcome.plant
    if plant.row.tag == PROFILE.PRIVATE_TAG:
        group, _, offset = SAFE_PRIVATE
        safe = plant.tag == (group << 16) | 0x1000 | offset
        return kept(outcome) if safe else removed(outcome)
    if plant.vr == "TM" or plant.tag == TIMEZONE_OFFSET:
        return kept(outcome)
    if plant.vr in BINARY_VRS:
        return kept(outcome) if plant.row.tag in GRAPHICS_ROWS else check(plant.row.basic, outcome)
    if elem is None:
        return "removed"
    if plant.vr != elem.VR:
        return f"VR {elem.VR}"
    if plant.vr == "SQ":
        if len(elem.value) != 1:
            return "sequence items not kept"
        item = elem.value[0]
        text = str(item.get("TextValue", ""))
        if item.get("CodeValue") != "T-D3000" or "lesion" not in text or not _canary_free(text):
            return "items not cleaned as structured content"
        return None
    if plant.vr in ("DA", "DT"):
        return _shifted(outcome, str(elem.value))
    if plant.vr == "PN":
        return None if _is_empty(elem.value) else "a name kept"
    if _is_empty(elem.value) or elem.value == plant.value or not _canary_free(elem.value):
        return "not cleaned"
    return None


def _shifted(outcome: Outcome, value: str) -> str | None:
    if len(value) < 8 or not value[:8].isdigit():
        return f"not a date ({len(value)} characters)"
    days = (date.fromisoformat(f"{value[:4]}-{value[4:6]}-{value[6:8]}") - date(2024, 1, 5)).days
    if not -365 <= days <= -1:
        return f"moved by {days} days"
    if outcome.plant.vr == "DT" and value[8:] != ORIGINAL_TIME:
        return "time part changed"
    outcome.shifts.add(days)
    return None


CHECKS: dict[str, Callable[[Outcome], str | None]] = {
    "X": removed,
    "Z": zeroed,
    "D": dummy,
    "K": kept,
    "U": uid_replaced,
    "U*": uid_replaced,
    "C": cleaned,
}


def check(code: str, outcome: Outcome) -> str | None:
    """None when the outcome fits ``code``; a compound code accepts any of its parts."""
    problems = []
    for part in code.split("/"):
        problem = CHECKS[part](outcome)
        if problem is None:
            return None
        problems.append(f"{part}: {problem}")
    return "; ".join(problems)


def expected_code(row: ProfileRow, options: DeidOptions) -> str:
    """The row's code for these options: an enabled option column's, else the Basic Profile's."""
    enabled = {Option(name) for name in options.__dataclass_fields__ if getattr(options, name)}
    codes = {row.options[option] for option in enabled if option in row.options}
    # Two enabled options never disagree: only Full Dates and Modified Dates do, and they
    # exclude each other (DeidOptions refuses both).
    assert len(codes) <= 1, f"{row.tag}: conflicting option codes {codes}"
    return codes.pop() if codes else row.basic


def _flatten(value: Any) -> str:
    if isinstance(value, Sequence | list):
        return " ".join(_flatten(elem.value) for item in value for elem in item)
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _has_original_uid(elem: DataElement, plant: Plant) -> bool:
    original = plant.value[0].ReferencedSOPInstanceUID
    return original in _flatten(elem.value)


def _outcomes(options: DeidOptions) -> Iterator[Outcome]:
    source = _planted_dataset()
    first = Deidentifier(options, KEY).deidentify(source).dataset
    second = Deidentifier(options, KEY).deidentify(source).dataset
    shifts: set[int] = set()
    nested_first = first[CONTAINER].value[0]
    nested_second = second[CONTAINER].value[0]
    for plant in PLANTS:
        if plant.in_meta:
            yield Outcome(
                plant,
                "file meta",
                first.file_meta.get(plant.tag),
                second.file_meta.get(plant.tag),
                first,
                shifts,
            )
            continue
        yield Outcome(plant, "top level", first.get(plant.tag), second.get(plant.tag), first, shifts)
        if plant.nested:
            yield Outcome(
                plant, "nested item", nested_first.get(plant.tag), nested_second.get(plant.tag), first, shifts
            )


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_every_row_of_table_e1_1_gets_its_action(case: str) -> None:
    options = CASES[case]
    failures = []
    outcomes = list(_outcomes(options))
    for outcome in outcomes:
        plant = outcome.plant
        code = expected_code(plant.row, options)
        problem = check(code, outcome)
        if problem is not None:
            failures.append(
                f"{plant.row.tag} {plant.row.name} [{plant.vr}] {outcome.where}: {code}: {problem}"
            )
    assert failures == []
    # Every planted attribute was judged, at both depths where it can be nested.
    assert len(outcomes) == sum(2 if plant.nested else 1 for plant in PLANTS)
    # Modified Dates moves every date of the patient by one and the same offset.
    shifts = outcomes[0].shifts
    assert len(shifts) == (1 if options.retain_long_modified_dates else 0)


def test_every_row_is_planted() -> None:
    planted = {plant.row.tag for plant in PLANTS}
    assert planted == {row.tag for row in PROFILE.rows}
    assert len(PROFILE.rows) == 460


def test_the_option_columns_are_all_exercised() -> None:
    """Each option column names some attributes, so each ``only …`` case tests something."""
    for option in Option:
        assert any(option in row.options for row in PROFILE.rows), option


def test_opaque_bytes_that_cannot_be_cleaned_get_the_basic_profile_action() -> None:
    """Clean Descriptors names Maker Note and Device Setting Description (EXIF bytes), and
    Modified Dates names Frame Origin Timestamp (bytes): none can be cleaned in place, so
    they are removed or replaced by a dummy as without the option — never kept."""
    ds = Dataset()
    ds.add(DataElement(0x0016002B, "OB", BINARY))  # Maker Note: X, Clean Descriptors C
    ds.add(DataElement(0x0016004B, "OB", BINARY))  # Device Setting Description: X, C
    ds.add(DataElement(0x00340007, "OB", BINARY))  # Frame Origin Timestamp: D, Modified Dates C
    out = Deidentifier(CASES["default options"], KEY).deidentify(ds).dataset
    assert 0x0016002B not in out and 0x0016004B not in out
    assert out[0x00340007].value not in (BINARY, b"") and out[0x00340007].VR == "OB"
