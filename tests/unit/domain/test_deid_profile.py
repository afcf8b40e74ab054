"""PS3.15 Table E.1-1 as data: size, known rows, masks and how codes resolve."""

from __future__ import annotations

import pytest
from pydicom.datadict import dictionary_description

from irmsia.domain.deid_profile import (
    Action,
    Option,
    load_profile,
    load_safe_private,
    parse_profile,
    parse_safe_private,
    resolve_code,
)
from irmsia.errors import ConfigError

HEADER = (
    "tag,name,basic,retain_safe_private,retain_uids,retain_device_identity,retain_institution_identity,"
    "retain_patient_characteristics,retain_long_full_dates,retain_long_modified_dates,clean_descriptors,"
    "clean_structured_content,clean_graphics\n"
)


def test_table_holds_the_full_standard_table() -> None:
    profile = load_profile()
    # Table E.1-1 has several hundred rows; a hand-picked subset would be far smaller.
    assert 440 <= len(profile) <= 520
    assert len(profile.exact_rows) == len(profile) - 4  # three masked rows and the private row


def test_every_exact_row_names_the_attribute_at_its_tag() -> None:
    profile = load_profile()
    mismatched = []
    for tag, row in profile.exact_rows.items():
        simplified = "".join(ch for ch in row.name.lower() if ch.isalnum())
        expected = "".join(ch for ch in dictionary_description(tag).lower() if ch.isalnum())
        if simplified != expected:
            mismatched.append(row.tag)
    assert mismatched == []


@pytest.mark.parametrize(
    ("tag", "basic"),
    [
        (0x00100010, "Z"),  # Patient's Name
        (0x00100020, "Z"),  # Patient ID
        (0x00100030, "Z"),  # Patient's Birth Date
        (0x0020000D, "U"),  # Study Instance UID
        (0x00080018, "U"),  # SOP Instance UID
        (0x00080050, "Z"),  # Accession Number
        (0x00080080, "X/Z/D"),  # Institution Name
        (0x00081140, "X/Z/U*"),  # Referenced Image Sequence
        (0x00081030, "X"),  # Study Description
        (0x0040A730, "D"),  # Content Sequence
        (0x00181000, "X/Z/D"),  # Device Serial Number
    ],
)
def test_known_rows_have_their_basic_profile_action(tag: int, basic: str) -> None:
    row = load_profile().row_for(tag)
    assert row is not None
    assert row.basic == basic


@pytest.mark.parametrize(
    ("tag", "option", "code"),
    [
        (0x00080020, Option.RETAIN_LONG_MODIFIED_DATES, "C"),  # Study Date
        (0x00080020, Option.RETAIN_LONG_FULL_DATES, "K"),
        (0x00100040, Option.RETAIN_PATIENT_CHARACTERISTICS, "K"),  # Patient's Sex
        (0x00080080, Option.RETAIN_INSTITUTION_IDENTITY, "K"),  # Institution Name
        (0x00181000, Option.RETAIN_DEVICE_IDENTITY, "K"),  # Device Serial Number
        (0x0020000D, Option.RETAIN_UIDS, "K"),  # Study Instance UID
        (0x00081030, Option.CLEAN_DESCRIPTORS, "C"),  # Study Description
        (0x0040A730, Option.CLEAN_STRUCTURED_CONTENT, "C"),  # Content Sequence
        (0x00700001, Option.CLEAN_GRAPHICS, "C"),  # Graphic Annotation Sequence
        (0x00081120, Option.RETAIN_UIDS, "X"),  # Referenced Patient Sequence stays removed
    ],
)
def test_option_columns_override_the_basic_action(tag: int, option: Option, code: str) -> None:
    row = load_profile().row_for(tag)
    assert row is not None
    assert row.code_for({option}) == code
    assert row.code_for(set()) == row.basic


def test_patient_birth_date_has_no_option_that_keeps_it() -> None:
    row = load_profile().row_for(0x00100030)
    assert row is not None
    assert row.code_for(set(Option)) == "Z"


def test_keeping_option_wins_over_cleaning_option() -> None:
    profile = parse_profile(
        HEADER + '"(0010,2110)",Allergies,X,,,,,K,,,C,,\n' + '"(gggg,eeee)",Private,X,C,,,,,,,,,\n'
    )
    row = profile.row_for(0x00102110)
    assert row is not None
    assert row.code_for({Option.CLEAN_DESCRIPTORS}) == "C"
    assert row.code_for({Option.CLEAN_DESCRIPTORS, Option.RETAIN_PATIENT_CHARACTERISTICS}) == "K"


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        (0x50001234, "Curve Data"),
        (0x501E0000, "Curve Data"),
        (0x60003000, "Overlay Data"),
        (0x601E3000, "Overlay Data"),
        (0x60024000, "Overlay Comments"),
        (0x00291010, "Private attributes"),
        (0x7FE10010, "Private attributes"),
    ],
)
def test_group_masks_and_private_groups_match(tag: int, name: str) -> None:
    row = load_profile().row_for(tag)
    assert row is not None
    assert row.name == name


def test_unlisted_public_attribute_has_no_row() -> None:
    assert load_profile().row_for(0x00280010) is None  # Rows
    assert load_profile().row_for(0x60000010) is None  # Overlay Rows is not itself in the table


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("X", Action.REMOVE),
        ("Z", Action.ZERO),
        ("D", Action.DUMMY),
        ("K", Action.KEEP),
        ("C", Action.CLEAN),
        ("U", Action.UID),
        ("X/Z", Action.ZERO),
        ("X/Z/D", Action.ZERO),
        ("Z/D", Action.ZERO),
        ("X/D", Action.DUMMY),
        ("X/Z/U*", Action.UID),
    ],
)
def test_codes_resolve_to_one_action(code: str, action: Action) -> None:
    assert resolve_code(code) is action


def test_profile_is_parsed_once_per_process() -> None:
    assert load_profile() is load_profile()


@pytest.mark.parametrize(
    "text",
    [
        "tag,name\n",
        HEADER + '"(0010,0010)",Patient Name,Q,,,,,,,,,,\n"(gggg,eeee)",Private,X,C,,,,,,,,,\n',
        HEADER + '"(0010,0010)",Patient Name,Z,,,,,,,,,\n',
        HEADER + '"(0010,0010)",Patient Name,Z,,,,,,,,,,\n',  # no private row
        HEADER + '"0010,0010",Patient Name,Z,,,,,,,,,,\n"(gggg,eeee)",Private,X,C,,,,,,,,,\n',
    ],
)
def test_malformed_table_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_profile(text)


def test_packaged_safe_private_list_is_keyed_by_group_creator_and_offset() -> None:
    safe = load_safe_private()
    assert len(safe) >= 1
    first = safe.attributes[0]
    assert safe.allows(first.group, first.creator, first.offset)
    assert safe.knows_creator(first.group, first.creator)
    assert not safe.allows(first.group, "SOME OTHER CREATOR", first.offset)
    assert not safe.allows(first.group + 2, first.creator, first.offset)


@pytest.mark.parametrize(
    "text",
    [
        '{"attributes": [{"group": "0018", "creator": "X", "offset": "01", "vr": "DS", "name": "n"}]}',
        '{"attributes": [{"group": "0019", "creator": "X", "offset": "1FF", "vr": "DS", "name": "n"}]}',
        '{"attributes": [{"group": "0019"}]}',
        "not json",
    ],
)
def test_malformed_safe_private_list_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_safe_private(text)
