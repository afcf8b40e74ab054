"""The ``NodeStore`` of the embedded log: complete-subtree hashes in the ``ledger_nodes`` table.

A store is bound to one SQLAlchemy ``Session`` and writes through it, so the nodes of an append
commit or roll back with whatever else that transaction holds (the record the entry covers).
Node ``(level, index)`` is kept under the single integer key ``level << 56 | index``: one
primary-key lookup per node on every backend, and room for 2**56 leaves.

Serialising writers: with ``lock=True`` the first :meth:`SqlNodeStore.size` call locks the
``ledger_state`` row until the transaction ends (``SELECT ... FOR UPDATE`` on PostgreSQL; on
SQLite a no-op ``UPDATE`` takes the database's single write lock before anything is read, so
the size read can never be stale). :meth:`append_nodes` still checks the size it replaces, as
the ``NodeStore`` protocol asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from irmsia.db.ledger import STATE_ROW_ID, LedgerNode, LedgerState
from irmsia.errors import Conflict, LedgerError
from irmsia.ledger.nodestore import Node, NodeKey

LEVEL_SHIFT = 56
MAX_LEAVES = 1 << LEVEL_SHIFT

_NODES = cast(Table, LedgerNode.__table__)
_STATE = cast(Table, LedgerState.__table__)
_GET_NODES = select(_NODES.c.id, _NODES.c.hash).where(_NODES.c.id.in_(bindparam("ids", expanding=True)))
# Built once: every append runs these, and building a statement costs more than running it.
_IS_STATE = _STATE.c.id == STATE_ROW_ID
_TAKE_WRITE_LOCK = update(_STATE).where(_IS_STATE).values(size=_STATE.c.size)  # SQLite: a no-op write
_READ_SIZE = select(_STATE.c.size).where(_IS_STATE)
_READ_SIZE_LOCKED = _READ_SIZE.with_for_update()
_MOVE_SIZE = (
    update(_STATE).where(_IS_STATE, _STATE.c.size == bindparam("old_size")).values(size=bindparam("new_size"))
)
_INSERT_NODES = insert(_NODES)


def node_id(level: int, index: int) -> int:
    """The ``ledger_nodes.id`` of node ``(level, index)``."""
    return (level << LEVEL_SHIFT) | index


class SqlNodeStore:
    """A ``NodeStore`` over the ``ledger_nodes`` and ``ledger_state`` tables, through one session.

    Build one per transaction; with ``lock=True`` it serialises against every other writer
    until that transaction ends. Nothing is committed here: the caller's transaction decides.
    """

    def __init__(self, session: Session, *, lock: bool = False) -> None:
        self._session = session
        self._lock = lock
        self._size: int | None = None

    def size(self) -> int:
        """The committed tree size (locking the state row first when built with ``lock=True``)."""
        if self._size is None:
            self._size = self._read_size()
        return self._size

    def _read_size(self) -> int:
        # Core on the session's connection (same transaction): the ORM's execute path costs
        # more than these one-row statements, and every append runs them.
        connection = self._session.connection()
        is_sqlite = connection.dialect.name == "sqlite"
        if self._lock and is_sqlite:
            # Take SQLite's write lock before the read: a deferred transaction that reads first
            # and writes later fails with SQLITE_BUSY_SNAPSHOT when another writer slipped in.
            connection.execute(_TAKE_WRITE_LOCK)
        query = _READ_SIZE_LOCKED if self._lock else _READ_SIZE
        size = connection.execute(query).scalar_one_or_none()
        if size is None:
            if not self._lock:
                return 0
            # First append into an empty database: create the row, then lock it like any other.
            self._create_state_row()
            size = connection.execute(query).scalar_one()
        return int(size)

    def _create_state_row(self) -> None:
        """Insert the size-0 state row unless it exists (a racing writer may have created it)."""
        connection = self._session.connection()
        make_insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        connection.execute(
            make_insert(_STATE).values(id=STATE_ROW_ID, size=0).on_conflict_do_nothing(index_elements=["id"])
        )

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        """The hashes for ``keys`` in order, in one query; raises ``LedgerError`` for a missing node."""
        if not keys:
            return []
        ids = [(level << LEVEL_SHIFT) | index for level, index in keys]
        rows = self._session.connection().execute(_GET_NODES, {"ids": list(set(ids))})
        found: dict[int, bytes] = dict(rows.all())
        try:
            return [found[i] for i in ids]
        except KeyError:
            raise LedgerError("a requested Merkle node is not stored") from None

    def append_nodes(self, old_size: int, new_size: int, nodes: Sequence[Node]) -> None:
        """Insert ``nodes`` and move the size from ``old_size`` to ``new_size`` in the session.

        Raises ``Conflict`` when the stored size is not ``old_size`` (another writer appended).
        """
        if new_size < old_size:
            raise LedgerError("a Merkle tree cannot shrink")
        if new_size > MAX_LEAVES:
            raise LedgerError("the log is full")
        connection = self._session.connection()
        sizes = {"old_size": old_size, "new_size": new_size}
        changed = cast(CursorResult[Any], connection.execute(_MOVE_SIZE, sizes)).rowcount
        if changed == 0 and old_size == 0:
            self._create_state_row()
            changed = cast(CursorResult[Any], connection.execute(_MOVE_SIZE, sizes)).rowcount
        if changed != 1:
            raise Conflict("the Merkle tree grew since it was read")
        if nodes:
            try:
                connection.execute(
                    _INSERT_NODES,
                    [
                        {"id": (level << LEVEL_SHIFT) | index, "hash": digest}
                        for level, index, digest in nodes
                    ],
                )
            except IntegrityError:
                # A node that should not exist yet does: the size row was edited or rolled back
                # by hand. The transaction is unusable now; the caller's rollback undoes it all.
                raise LedgerError("the log's stored size disagrees with its stored nodes") from None
        self._size = new_size
