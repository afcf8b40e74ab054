"""The embedded transparency log: append in the caller's transaction, sign checkpoints, prove.

Why nothing committed is ever missing from the log: :meth:`Ledger.append` writes the entry
row, its Merkle nodes and the new tree size through the *caller's* ``Session`` and never
commits. The record an entry covers (a ``StoredObject``, an ``AuditEvent``) and its entry
therefore commit together or not at all; there is no second transaction that could fail
after the first succeeded. Appends serialise on the ``ledger_state`` row (see
``irmsia.ledger.sqlstore``), so leaf indexes are dense and follow commit order.

Checkpoints are C2SP signed notes (``irmsia.ledger.checkpoint``) over ``(origin, size, root,
time)``, kept in ``ledger_checkpoints``. Receipts are the JSON documented in
``irmsia.ledger.verifier`` and check offline with ``verify_receipt`` and :attr:`Ledger.public_key`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from irmsia.clock import Clock
from irmsia.db.imaging import StoredObject
from irmsia.db.ledger import LedgerCheckpoint, LedgerEntry
from irmsia.errors import InvalidRequest, NotFound
from irmsia.ledger import entries
from irmsia.ledger.checkpoint import NoteSigner, NoteVerifier, make_checkpoint, sign_checkpoint
from irmsia.ledger.merkle import MerkleTree
from irmsia.ledger.sqlstore import SqlNodeStore
from irmsia.ledger.verifier import make_receipt

_ENTRIES = cast(Table, LedgerEntry.__table__)
_INSERT_ENTRIES = insert(_ENTRIES)


@dataclass(frozen=True)
class CheckpointRecord:
    """A stored signed checkpoint."""

    size: int
    root_hash: bytes
    note: str
    created_at: datetime


@dataclass(frozen=True)
class EntryRecord:
    """One log entry: its leaf index and canonical bytes."""

    index: int
    kind: str
    ref_id: str | None
    subject_id: str | None
    data: bytes


@dataclass(frozen=True)
class Receipt:
    """A receipt (the verifier's JSON) and the facts it proves, for display."""

    object_id: str
    index: int
    checkpoint_size: int
    json: str


def _checkpoint_record(row: LedgerCheckpoint) -> CheckpointRecord:
    return CheckpointRecord(size=row.size, root_hash=row.root_hash, note=row.note, created_at=row.created_at)


def _entry_record(row: LedgerEntry) -> EntryRecord:
    return EntryRecord(
        index=row.idx, kind=row.kind, ref_id=row.ref_id, subject_id=row.subject_id, data=row.data
    )


class Ledger:
    """The log service. Every method works inside a session the caller opened and commits.

    ``signer`` is the log's Ed25519 note key (secret; injected, never logged); ``origin`` is the
    checkpoint's first line, e.g. ``irmsia.example.org/ledger``; ``clock`` stamps checkpoints.
    """

    def __init__(self, signer: NoteSigner, *, origin: str, clock: Clock) -> None:
        self._signer = signer
        self.origin = origin
        self._clock = clock
        # Fail at start-up, not at the first checkpoint, when the origin cannot be a checkpoint line.
        make_checkpoint(origin, 0, b"\x00" * 32)

    @property
    def verifier(self) -> NoteVerifier:
        """The public key that verifies this log's checkpoints."""
        return self._signer.verifier

    @property
    def public_key(self) -> str:
        """The verifier key string to publish (``name+keyid+base64``)."""
        return self._signer.verifier.to_string()

    # --- writing ------------------------------------------------------------------------

    def append(self, session: Session, entry: bytes) -> int:
        """Append one canonical entry in the caller's transaction; returns its leaf index."""
        return self.append_many(session, [entry])

    def append_many(self, session: Session, batch: Sequence[bytes]) -> int:
        """Append entries in order with one lock, one node insert and one entry insert.

        Returns the first new leaf index. Blocks while another transaction is appending.
        """
        if not batch:
            return self.size(session)
        tree = MerkleTree(SqlNodeStore(session, lock=True))
        first = tree.append_many(batch)
        rows = []
        for offset, entry in enumerate(batch):
            found = entries.index_of(entry)
            rows.append(
                {
                    "idx": first + offset,
                    "kind": found.kind,
                    "ref_id": found.ref_id,
                    "subject_id": found.subject_id,
                    "data": entry,
                }
            )
        session.connection().execute(_INSERT_ENTRIES, rows)  # Core: every append runs it
        return first

    def register_object(self, session: Session, obj: StoredObject) -> int:
        """Log a stored object's registration; call right after adding its row, same session."""
        if obj.id is None or obj.created_at is None:
            session.flush()  # assigns the id default
        return self.append(session, entries.object_entry(obj))

    def register_objects(self, session: Session, objects: Sequence[StoredObject]) -> int:
        """Log several stored objects' registrations with one append (ingest logs a job's objects
        together); returns the first leaf index. Same session and transaction as the rows."""
        if any(obj.id is None or obj.created_at is None for obj in objects):
            session.flush()
        return self.append_many(session, [entries.object_entry(obj) for obj in objects])

    def sign_checkpoint(self, session: Session) -> CheckpointRecord:
        """Sign and store a checkpoint of the current tree, or return the stored one at this size.

        Locks the tree for the rest of the transaction, so the checkpoint is of a committed size.
        """
        tree = MerkleTree(SqlNodeStore(session, lock=True))
        existing = session.get(LedgerCheckpoint, tree.size)
        if existing is not None:
            return _checkpoint_record(existing)
        now = self._clock()
        checkpoint = make_checkpoint(self.origin, tree.size, tree.root(), time=now)
        row = LedgerCheckpoint(
            size=tree.size,
            root_hash=checkpoint.root_hash,
            note=sign_checkpoint(checkpoint, self._signer),
            created_at=now,
        )
        session.add(row)
        session.flush()
        return _checkpoint_record(row)

    # --- reading ------------------------------------------------------------------------

    def size(self, session: Session) -> int:
        """The committed tree size."""
        return SqlNodeStore(session).size()

    def tree(self, session: Session) -> MerkleTree:
        """A read-only view of the tree as of now, for roots and proofs."""
        return MerkleTree(SqlNodeStore(session))

    def latest_checkpoint(self, session: Session) -> CheckpointRecord | None:
        """The stored checkpoint of the largest size, or None before the first one."""
        row = session.scalars(
            select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1)
        ).first()
        return _checkpoint_record(row) if row is not None else None

    def checkpoint_at(self, session: Session, size: int) -> CheckpointRecord | None:
        """The stored checkpoint of exactly ``size`` leaves, if one was signed."""
        row = session.get(LedgerCheckpoint, size)
        return _checkpoint_record(row) if row is not None else None

    def checkpoints(self, session: Session, *, offset: int, limit: int) -> tuple[list[CheckpointRecord], int]:
        """Stored checkpoints, largest first, and their total count."""
        total = session.scalar(select(func.count()).select_from(LedgerCheckpoint)) or 0
        rows = session.scalars(
            select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).offset(offset).limit(limit)
        ).all()
        return [_checkpoint_record(row) for row in rows], int(total)

    def entry(self, session: Session, index: int) -> EntryRecord:
        """The entry at leaf ``index``; raises ``NotFound``."""
        row = session.get(LedgerEntry, index)
        if row is None:
            raise NotFound("no log entry at that index")
        return _entry_record(row)

    def entries_for(
        self, session: Session, kind: str, *, ref_id: str | None = None, subject_id: str | None = None
    ) -> list[EntryRecord]:
        """Entries of ``kind`` by own id or subject id, in log order."""
        if (ref_id is None) == (subject_id is None):
            raise InvalidRequest("give exactly one of ref_id and subject_id")
        column = LedgerEntry.ref_id if ref_id is not None else LedgerEntry.subject_id
        rows = session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.kind == kind, column == (ref_id if ref_id is not None else subject_id))
            .order_by(LedgerEntry.idx)
        ).all()
        return [_entry_record(row) for row in rows]

    def inclusion_proof(self, session: Session, index: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        return self.tree(session).inclusion_proof(index, size)

    def consistency_proof(self, session: Session, first: int, second: int) -> list[bytes]:
        """RFC 9162 consistency proof between the trees of ``first`` and ``second`` leaves."""
        return self.tree(session).consistency_proof(first, second)

    def receipt(self, session: Session, object_id: str) -> Receipt:
        """A receipt for a stored object's registration entry (its latest, if re-registered).

        Uses the latest checkpoint when it covers the entry, else signs a new one (which locks
        the tree for the rest of the transaction). Raises ``NotFound`` for an unlogged object.
        """
        found = self.entries_for(session, entries.OBJECT, ref_id=object_id)
        if not found:
            raise NotFound("no log entry records that object")
        entry = found[-1]
        checkpoint = self.latest_checkpoint(session)
        if checkpoint is None or checkpoint.size <= entry.index:
            checkpoint = self.sign_checkpoint(session)
        proof = self.inclusion_proof(session, entry.index, checkpoint.size)
        return Receipt(
            object_id=object_id,
            index=entry.index,
            checkpoint_size=checkpoint.size,
            json=make_receipt(entry.data, entry.index, proof, checkpoint.note),
        )
