"""Tables of the tamper-evident ledger: entries, Merkle nodes, tree size, checkpoints, anchors.

The log is append-only by construction of the code that writes it (``irmsia.ledger.service``),
not by the database: anyone with SQL access can edit these rows, and ``irmsia verify`` is what
notices. Entries hold canonical bytes that carry opaque ids and digests only, never patient data.

``ledger_state`` has one row (``id = 1``): the committed tree size. Every append locks it first
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers), so appends from many
processes form one sequence.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from irmsia.db.base import Base, new_id

# INTEGER PRIMARY KEY is SQLite's rowid alias (no second index, the fastest inserts); PostgreSQL
# needs 64 bits because node ids pack the level into the high bits.
LogInteger = BigInteger().with_variant(Integer(), "sqlite")

STATE_ROW_ID = 1


class LedgerState(Base):
    """The committed tree size; the row every append locks."""

    __tablename__ = "ledger_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerEntry(Base):
    """One leaf of the log: the canonical entry bytes at leaf index ``idx``.

    ``kind``, ``ref_id`` and ``subject_id`` repeat fields of ``data`` so entries can be found by
    object id, audit event id or image id; verification checks that they still agree with it.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_ref", "kind", "ref_id"),
        Index("ix_ledger_entries_subject", "kind", "subject_id"),
    )

    idx: Mapped[int] = mapped_column(LogInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))  # object | audit | other
    ref_id: Mapped[str | None] = mapped_column(String(128))  # stored object id / audit event id
    subject_id: Mapped[str | None] = mapped_column(String(128))  # image (instance) id / resource id
    data: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerNode(Base):
    """One complete-subtree hash; ``id`` packs ``(level, index)`` (see ``irmsia.ledger.sqlstore``)."""

    __tablename__ = "ledger_nodes"

    id: Mapped[int] = mapped_column(LogInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerCheckpoint(Base):
    """A signed tree head, kept verbatim as the C2SP signed note that was issued."""

    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class LedgerAnchor(Base):
    """One publication of a checkpoint to an external ledger, and what that ledger answered."""

    __tablename__ = "ledger_anchors"
    __table_args__ = (
        Index("ix_ledger_anchors_created", "created_at"),
        Index("ix_ledger_anchors_kind_size", "kind", "checkpoint_size"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))  # mock | ipfs | fabric
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # anchored | failed
    reference: Mapped[str | None] = mapped_column(String(255))  # CID, transaction id, ...
    receipt: Mapped[str] = mapped_column(Text, default="{}")  # JSON: what the anchor returned
    note: Mapped[str] = mapped_column(Text)  # the signed checkpoint that was published
    error: Mapped[str | None] = mapped_column(String(255))  # error code and PHI-free detail
    created_at: Mapped[datetime]


class LedgerVerification(Base):
    """The result of one verification run (manual, scheduled or from the CLI)."""

    __tablename__ = "ledger_verifications"
    __table_args__ = (Index("ix_ledger_verifications_started", "started_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    trigger: Mapped[str] = mapped_column(String(16))  # api | cli | scheduled
    scope: Mapped[str] = mapped_column(String(64))  # all | sample:N | study:<id>
    actor_id: Mapped[str | None] = mapped_column(String(128))
    ok: Mapped[bool] = mapped_column(Boolean)
    objects_checked: Mapped[int] = mapped_column(Integer, default=0)
    bytes_hashed: Mapped[int] = mapped_column(BigInteger, default=0)
    entries_checked: Mapped[int] = mapped_column(BigInteger, default=0)
    mismatch_count: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[str] = mapped_column(Text, default="{}")  # JSON: mismatches, checkpoints, warnings
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
