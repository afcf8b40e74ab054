"""Keyed pseudonyms, replacement UIDs and date shifts for de-identification.

Every value here is a pure function of (secret key, original value): the same input gives
the same output in every process, on every upload and on every machine holding the key.
That keeps a patient's studies groupable and references between objects intact after
de-identification, while nobody without the key can link an output back to its input
(HMAC-SHA256, RFC 2104; one sub-key per purpose so outputs of different kinds cannot be
compared with each other).

Identity basis (what the patient pseudonym and the date shift are derived from):

* the Patient ID, stripped and case-folded, when it is present and not blank: two files of
  one patient whose names are spelled differently still get the same pseudonym;
* otherwise the normalised Patient's Name (case-folded, blanks collapsed, empty trailing
  components dropped) joined with the Patient's Birth Date. Files that carry no ID, no name
  and no birth date all share one pseudonym: they carry nothing to tell them apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from irmsia.errors import ConfigError

__all__ = [
    "ACCESSION_PREFIX",
    "DATE_SHIFT_MAX_DAYS",
    "DATE_SHIFT_MIN_DAYS",
    "MIN_KEY_BYTES",
    "PATIENT_PREFIX",
    "Pseudonymizer",
    "identity_basis",
    "normalise_accession",
    "normalise_patient_id",
    "normalise_person_name",
]

MIN_KEY_BYTES = 16
PATIENT_PREFIX = "IRM-"
# Accession Number is SH (16 characters at most): "A-" and 14 base32 characters (70 bits).
ACCESSION_PREFIX = "A-"
_PATIENT_CHARS = 16  # 80 bits
_ACCESSION_CHARS = 14
# Dates move back in time by 1 to 365 days; never forward, so no shifted date is in the future.
DATE_SHIFT_MIN_DAYS = -365
DATE_SHIFT_MAX_DAYS = -1
_MAX_UID_LENGTH = 64
_UID_ROOT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
# A root longer than this would leave fewer than 23 decimal digits (~76 bits) for the hash.
_MAX_ROOT_LENGTH = 40
_BLANKS = re.compile(r"\s+")


def normalise_patient_id(value: str) -> str:
    """Patient ID as compared for pseudonyms: surrounding blanks removed, case-folded."""
    return value.strip().casefold()


def normalise_accession(value: str) -> str:
    """Accession Number as compared for pseudonyms: surrounding blanks removed, case-folded."""
    return value.strip().casefold()


def normalise_person_name(value: str) -> str:
    """A DICOM PN value as compared for pseudonyms.

    Case-folded, runs of blanks collapsed inside each ``^`` component, blanks around
    components removed and empty trailing components dropped, so ``"DOE^JOHN^^"`` and
    ``" doe ^ john"`` compare equal.
    """
    groups = []
    for group in value.split("="):
        parts = [_BLANKS.sub(" ", part).strip().casefold() for part in group.split("^")]
        while parts and not parts[-1]:
            parts.pop()
        groups.append("^".join(parts))
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def identity_basis(patient_id: str, patient_name: str, birth_date: str) -> str:
    """The string a patient's pseudonym and date shift are derived from (see module doc)."""
    normalised_id = normalise_patient_id(patient_id)
    if normalised_id:
        return "id:" + normalised_id
    return "name:" + normalise_person_name(patient_name) + "|" + birth_date.strip()


def _validate_uid_root(root: str) -> None:
    if not _UID_ROOT.fullmatch(root) or len(root) > _MAX_ROOT_LENGTH:
        raise ConfigError(
            f"uid_root must be a dotted-decimal UID prefix of at most {_MAX_ROOT_LENGTH} characters"
        )


class Pseudonymizer:
    """Derives pseudonyms, UIDs and date shifts from one secret key.

    The key must be at least ``MIN_KEY_BYTES`` long (raises ``ConfigError`` otherwise) and
    must stay the same for the lifetime of a deployment: changing it changes every
    pseudonym, UID and date shift, so new uploads no longer group with earlier ones.
    """

    __slots__ = ("_accession", "_patient", "_shift", "_uid")

    def __init__(self, secret_key: bytes) -> None:
        if not isinstance(secret_key, bytes) or len(secret_key) < MIN_KEY_BYTES:
            raise ConfigError(f"the de-identification key must be at least {MIN_KEY_BYTES} bytes")
        # One sub-key per purpose (domain separation); each prepared HMAC is copied per use,
        # which skips re-hashing the key on every call.
        self._patient = self._prepared(secret_key, b"irmsia/patient")
        self._accession = self._prepared(secret_key, b"irmsia/accession")
        self._shift = self._prepared(secret_key, b"irmsia/date-shift")
        self._uid = self._prepared(secret_key, b"irmsia/uid")

    @staticmethod
    def _prepared(secret_key: bytes, label: bytes) -> hmac.HMAC:
        sub_key = hmac.new(secret_key, label, hashlib.sha256).digest()
        return hmac.new(sub_key, digestmod=hashlib.sha256)

    @staticmethod
    def _digest(prepared: hmac.HMAC, message: str) -> bytes:
        mac = prepared.copy()
        mac.update(message.encode("utf-8"))
        return mac.digest()

    def patient(self, basis: str) -> str:
        """Patient pseudonym, e.g. ``IRM-K5Q2…``: 20 characters, valid as LO and as PN."""
        text = base64.b32encode(self._digest(self._patient, basis)).decode("ascii")
        return PATIENT_PREFIX + text[:_PATIENT_CHARS]

    def accession(self, accession: str) -> str:
        """Pseudonymised Accession Number (16 characters, valid SH); blank stays blank."""
        normalised = normalise_accession(accession)
        if not normalised:
            return ""
        text = base64.b32encode(self._digest(self._accession, normalised)).decode("ascii")
        return ACCESSION_PREFIX + text[:_ACCESSION_CHARS]

    def date_shift_days(self, basis: str) -> int:
        """Whole days to add to every date of this patient, in [-365, -1]."""
        span = DATE_SHIFT_MAX_DAYS - DATE_SHIFT_MIN_DAYS + 1
        number = int.from_bytes(self._digest(self._shift, basis)[:8], "big")
        return DATE_SHIFT_MIN_DAYS + number % span

    def uid(self, original: str, root: str = "2.25") -> str:
        """Replacement UID for ``original``: ``root`` + "." + decimal of a keyed hash.

        With the default root ``2.25`` the hash is shaped as a version-8 UUID (RFC 9562), so
        the result is a conforming UUID-derived UID (PS3.5 B.2) of at most 44 characters.
        Other roots get as many hash digits as fit in 64 characters. Raises ``ConfigError``
        for an invalid root.
        """
        _validate_uid_root(root)
        digest = bytearray(self._digest(self._uid, original.strip())[:16])
        if root == "2.25":
            digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
            digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122/9562 variant
        number = int.from_bytes(digest, "big")
        room = _MAX_UID_LENGTH - len(root) - 1
        digits = str(number)
        if len(digits) > room:
            digits = str(number % 10**room)
        return f"{root}.{digits}"

    @staticmethod
    def check_uid_root(root: str) -> None:
        """Raise ``ConfigError`` unless ``root`` can prefix the UIDs made by :meth:`uid`."""
        _validate_uid_root(root)
