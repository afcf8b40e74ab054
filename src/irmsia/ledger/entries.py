"""Canonical ledger entries: the exact bytes hashed into the log, and how to read them back.

An entry is sorted-key, compact, UTF-8 JSON (``irmsia.db.models.canonical_json``) with a
``type`` field. Two types exist:

``object``  the registration of one encrypted blob, written when its ``StoredObject`` row is::

    {"type": "object", "object_id": "…", "instance_id": "…", "kind": "dicom", "frame": 0,
     "sha256": "<hex of the encrypted blob>", "size": 1234, "key_id": "…",
     "time": "2026-03-01T09:00:00Z"}

``audit``   one audit record, ``audit_canonical_bytes`` of its columns (opaque ids, action, outcome).

``analysis`` the SHA-256 of one AI result's canonical JSON, with the result and image ids.

``report``  the SHA-256 of what a radiologist signed for a study (the sign-off's canonical JSON).

Neither carries patient data: ids are random opaque strings, the digest is of ciphertext.
Everything here is pure (no clock; ``EntryLog`` only names the log's interface).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from irmsia.db.imaging import StoredObject
from irmsia.db.models import canonical_json
from irmsia.errors import InvalidRequest


class EntryLog(Protocol):
    """Where records are registered: the transparency log (``irmsia.ledger.service.Ledger``).

    ``append_many`` writes the entries through the caller's session, in its transaction, and
    returns the first new leaf index. Whoever writes a stored object or an audit record is
    built with one (the ingest pipeline, the audit log): there is no way to write either
    without its entry.
    """

    def append_many(self, session: Session, batch: Sequence[bytes]) -> int: ...


OBJECT = "object"
AUDIT = "audit"
ANALYSIS = "analysis"
REPORT = "report"
OTHER = "other"


def _utc_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise InvalidRequest("entry time must be timezone-aware")
    return value.isoformat().replace("+00:00", "Z")


def object_entry(obj: StoredObject) -> bytes:
    """The canonical registration entry of a stored object; its id and time must be set."""
    if not obj.id or obj.created_at is None:
        raise InvalidRequest("a stored object needs its id and creation time before it is logged")
    return object_entry_of(
        object_id=obj.id,
        instance_id=obj.instance_id,
        kind=obj.kind,
        frame=obj.frame or 0,
        sha256=obj.sha256,
        size=obj.size,
        key_id=obj.key_id,
        time=obj.created_at,
    )


def object_entry_of(
    *,
    object_id: str,
    instance_id: str,
    kind: str,
    frame: int,
    sha256: str,
    size: int,
    key_id: str,
    time: datetime,
) -> bytes:
    """The registration entry of a stored object from its column values (bulk inserts)."""
    return canonical_json(
        {
            "type": OBJECT,
            "object_id": object_id,
            "instance_id": instance_id,
            "kind": kind,
            "frame": frame,
            "sha256": sha256,
            "size": size,
            "key_id": key_id,
            "time": _utc_text(time),
        }
    )


def digest_entry(kind: str, ref_id: str, subject_id: str, sha256: str, time: datetime) -> bytes:
    """A registration of a digest: an AI result (``analysis``) or a signed report (``report``)."""
    if kind not in (ANALYSIS, REPORT):
        raise InvalidRequest("digest entries are analysis or report entries")
    return canonical_json(
        {"type": kind, "id": ref_id, "subject_id": subject_id, "sha256": sha256, "time": _utc_text(time)}
    )


@dataclass(frozen=True)
class EntryIndex:
    """What a log row repeats from its entry so it can be found: type, own id, subject id."""

    kind: str
    ref_id: str | None
    subject_id: str | None


def parse_entry(entry: bytes) -> dict[str, Any] | None:
    """The entry as a JSON object, or None when it is not one (foreign or damaged bytes)."""
    try:
        value = json.loads(entry)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def index_of(entry: bytes) -> EntryIndex:
    """The lookup fields of an entry: for objects the object and image ids, for audit records
    the event id and the resource id; ``other`` with no ids for anything else."""
    value = parse_entry(entry)
    if value is None:
        return EntryIndex(OTHER, None, None)
    kind = value.get("type")
    if kind == OBJECT:
        return EntryIndex(OBJECT, _text(value.get("object_id")), _text(value.get("instance_id")))
    if kind == AUDIT:
        return EntryIndex(AUDIT, _text(value.get("id")), _text(value.get("resource_id")))
    if kind in (ANALYSIS, REPORT):
        return EntryIndex(str(kind), _text(value.get("id")), _text(value.get("subject_id")))
    return EntryIndex(OTHER, None, None)


def _text(value: Any) -> str | None:
    return value[:128] if isinstance(value, str) else None
