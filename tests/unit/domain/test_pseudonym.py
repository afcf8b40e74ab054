"""Keyed pseudonyms, UIDs and date shifts: deterministic, keyed, within their limits."""

from __future__ import annotations

import re
import uuid

import pytest

from irmsia.domain.pseudonym import (
    DATE_SHIFT_MAX_DAYS,
    DATE_SHIFT_MIN_DAYS,
    Pseudonymizer,
    identity_basis,
    normalise_person_name,
)
from irmsia.errors import ConfigError

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"


def test_same_patient_id_gets_same_pseudonym_whatever_the_name() -> None:
    pseudo = Pseudonymizer(KEY)
    first = pseudo.patient(identity_basis("PID-42", "Doe^John", "19700101"))
    second = pseudo.patient(identity_basis("PID-42", "DOE^JON", ""))
    assert first == second


def test_patient_id_is_compared_without_case_and_surrounding_blanks() -> None:
    pseudo = Pseudonymizer(KEY)
    assert pseudo.patient(identity_basis(" pid-42 ", "", "")) == pseudo.patient(
        identity_basis("PID-42", "", "")
    )


def test_different_patient_ids_get_different_pseudonyms() -> None:
    pseudo = Pseudonymizer(KEY)
    assert pseudo.patient(identity_basis("PID-42", "", "")) != pseudo.patient(
        identity_basis("PID-43", "", "")
    )


def test_without_patient_id_name_and_birth_date_are_used() -> None:
    pseudo = Pseudonymizer(KEY)
    first = pseudo.patient(identity_basis("", "Doe^John", "19700101"))
    assert first == pseudo.patient(identity_basis("  ", " DOE ^ JOHN^^", "19700101"))
    assert first != pseudo.patient(identity_basis("", "Doe^John", "19700102"))
    assert first != pseudo.patient(identity_basis("", "Doe^Jane", "19700101"))


def test_person_name_normalisation_collapses_blanks_and_empty_components() -> None:
    assert normalise_person_name("DOE^JOHN^^") == normalise_person_name(" doe ^  john")
    assert normalise_person_name("Doe  Smith^John") == "doe smith^john"


def test_pseudonym_depends_on_the_key() -> None:
    basis = identity_basis("PID-42", "", "")
    assert Pseudonymizer(KEY).patient(basis) != Pseudonymizer(OTHER_KEY).patient(basis)


def test_pseudonym_fits_patient_id_and_patient_name() -> None:
    pseudonym = Pseudonymizer(KEY).patient(identity_basis("PID-42", "", ""))
    assert re.fullmatch(r"IRM-[A-Z2-7]{16}", pseudonym)


@pytest.mark.parametrize("key", [b"", b"short", b"0123456789abcde", "a text key of enough length"])
def test_short_or_non_bytes_key_is_refused(key: object) -> None:
    with pytest.raises(ConfigError) as raised:
        Pseudonymizer(key)  # type: ignore[arg-type]
    assert str(key) not in str(raised.value)


def test_accession_pseudonym_is_a_valid_short_string_and_consistent() -> None:
    pseudo = Pseudonymizer(KEY)
    value = pseudo.accession("ACC123")
    assert len(value) <= 16
    assert re.fullmatch(r"A-[A-Z2-7]{14}", value)
    assert pseudo.accession(" acc123 ") == value
    assert pseudo.accession("ACC124") != value
    assert pseudo.accession("   ") == ""


def test_accession_and_patient_pseudonyms_use_separate_keys() -> None:
    pseudo = Pseudonymizer(KEY)
    assert pseudo.accession("X1").removeprefix("A-") not in pseudo.patient("id:x1")


def test_date_shift_is_per_patient_and_within_range() -> None:
    pseudo = Pseudonymizer(KEY)
    shifts = {pseudo.date_shift_days(identity_basis(f"PID-{n}", "", "")) for n in range(300)}
    assert all(DATE_SHIFT_MIN_DAYS <= shift <= DATE_SHIFT_MAX_DAYS for shift in shifts)
    assert len(shifts) > 100  # spread over the range, not a constant
    basis = identity_basis("PID-7", "", "")
    assert pseudo.date_shift_days(basis) == Pseudonymizer(KEY).date_shift_days(basis)


def test_uid_is_deterministic_uuid_derived_and_short_enough() -> None:
    pseudo = Pseudonymizer(KEY)
    original = "1.2.826.0.1.3680043.8.498.12345"
    new = pseudo.uid(original)
    assert new == Pseudonymizer(KEY).uid(original)
    assert new != Pseudonymizer(OTHER_KEY).uid(original)
    assert new != pseudo.uid(original + "6")
    assert new.startswith("2.25.")
    assert len(new) <= 64
    as_uuid = uuid.UUID(int=int(new.removeprefix("2.25.")))
    assert as_uuid.version == 8
    assert as_uuid.variant == uuid.RFC_4122


def test_uid_with_a_long_root_stays_within_64_characters() -> None:
    root = "1.2.826.0.1.3680043.10.1234.5678"
    new = Pseudonymizer(KEY).uid("1.2.3.4", root)
    assert new.startswith(root + ".")
    assert len(new) <= 64
    digits = new.removeprefix(root + ".")
    assert digits.isdigit()
    assert digits == "0" or not digits.startswith("0")


@pytest.mark.parametrize("root", ["", "2.25.", "2..25", "02.25", "abc", "1." + "2" * 60])
def test_invalid_uid_root_is_refused(root: str) -> None:
    with pytest.raises(ConfigError):
        Pseudonymizer(KEY).uid("1.2.3", root)
