"""The SQL node store: same roots and proofs as the in-memory store, after reopening, on every DB."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from irmsia.db import migrate
from irmsia.db.base import Base
from irmsia.db.engine import make_engine, make_session_factory, transaction
from irmsia.db.ledger import LedgerNode, LedgerState
from irmsia.errors import Conflict, LedgerError
from irmsia.ledger.merkle import MerkleTree
from irmsia.ledger.nodestore import MemoryNodeStore
from irmsia.ledger.sqlstore import LEVEL_SHIFT, SqlNodeStore, node_id
from irmsia.ledger.verifier import leaf_hash, verify_consistency, verify_inclusion

PROPERTY = settings(max_examples=40, deadline=None, database=None)
LEDGER_TABLES = [Base.metadata.tables[name] for name in ("ledger_state", "ledger_nodes")]


@contextmanager
def _memory_sessions() -> Iterator[sessionmaker[Session]]:
    """A private in-memory SQLite database with the ledger tables (fast enough per example)."""
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine, tables=LEDGER_TABLES)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def db_sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine: Engine = make_engine(db_url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _append(sessions: sessionmaker[Session], batch: list[bytes]) -> int:
    with transaction(sessions) as session:
        return MerkleTree(SqlNodeStore(session, lock=True)).append_many(batch)


@PROPERTY
@given(batches=st.lists(st.integers(0, 40), min_size=1, max_size=8), data=st.data())
def test_sql_store_gives_the_same_roots_and_proofs_as_memory_after_reopening(
    batches: list[int], data: st.DataObject
) -> None:
    with _memory_sessions() as sessions:
        _check_against_memory(sessions, batches, data)


def _check_against_memory(sessions: sessionmaker[Session], batches: list[int], data: st.DataObject) -> None:
    memory = MerkleTree(MemoryNodeStore())
    count = 0
    for size in batches:
        batch = [b"entry-%d" % (count + i) for i in range(size)]
        assert _append(sessions, batch) == memory.append_many(batch) == count
        count += size
    # A fresh session and tree: everything comes back from the database.
    with sessions() as session:
        reopened = MerkleTree(SqlNodeStore(session))
        assert reopened.size == memory.size == count
        assert reopened.root() == memory.root()
        for size in range(count + 1):
            assert reopened.root(size) == memory.root(size)
        if count:
            size = data.draw(st.integers(1, count))
            index = data.draw(st.integers(0, size - 1))
            proof = reopened.inclusion_proof(index, size)
            assert proof == memory.inclusion_proof(index, size)
            verify_inclusion(leaf_hash(b"entry-%d" % index), index, size, proof, memory.root(size))
            first = data.draw(st.integers(1, count))
            second = data.draw(st.integers(first, count))
            consistency = reopened.consistency_proof(first, second)
            assert consistency == memory.consistency_proof(first, second)
            verify_consistency(first, second, consistency, memory.root(first), memory.root(second))


def test_sql_store_matches_memory_on_every_backend(db_sessions: sessionmaker[Session]) -> None:
    memory = MerkleTree(MemoryNodeStore())
    count = 0
    for size in (1, 2, 5, 64, 1, 130):
        batch = [b"e%d" % (count + i) for i in range(size)]
        assert _append(db_sessions, batch) == memory.append_many(batch)
        count += size
    with db_sessions() as session:
        reopened = MerkleTree(SqlNodeStore(session))
        assert reopened.size == count
        for size in range(1, count + 1, 7):
            assert reopened.root(size) == memory.root(size)
            assert reopened.inclusion_proof(size - 1, size) == memory.inclusion_proof(size - 1, size)
            assert reopened.consistency_proof(1 + size // 3, size) == memory.consistency_proof(
                1 + size // 3, size
            )
        # 2n - popcount(n) complete subtrees are stored: nothing more, nothing less.
        stored = session.scalar(select(func.count()).select_from(LedgerNode))
        assert stored == 2 * count - bin(count).count("1")


def test_a_rolled_back_append_leaves_nothing(db_sessions: sessionmaker[Session]) -> None:
    _append(db_sessions, [b"kept"])
    with pytest.raises(RuntimeError), transaction(db_sessions) as session:
        MerkleTree(SqlNodeStore(session, lock=True)).append_many([b"a", b"b", b"c"])
        raise RuntimeError("failure before commit")
    with db_sessions() as session:
        assert SqlNodeStore(session).size() == 1
        assert session.scalar(select(func.count()).select_from(LedgerNode)) == 1


def test_append_with_a_stale_size_is_refused(db_sessions: sessionmaker[Session]) -> None:
    _append(db_sessions, [b"one", b"two"])
    with db_sessions() as session, session.begin():
        store = SqlNodeStore(session)
        with pytest.raises(Conflict):
            store.append_nodes(1, 2, [(0, 1, leaf_hash(b"x"))])


def test_missing_node_is_a_ledger_error(db_sessions: sessionmaker[Session]) -> None:
    _append(db_sessions, [b"one", b"two", b"three"])
    with db_sessions() as session:
        store = SqlNodeStore(session)
        assert len(store.get_nodes([(1, 0), (0, 2), (1, 0)])) == 3
        with pytest.raises(LedgerError):
            store.get_nodes([(0, 3)])


def test_empty_database_has_size_zero_and_the_first_append_creates_the_state_row(
    db_sessions: sessionmaker[Session],
) -> None:
    with db_sessions() as session:
        assert SqlNodeStore(session).size() == 0
        assert session.get(LedgerState, 1) is None
    assert _append(db_sessions, [b"first"]) == 0
    with db_sessions() as session:
        assert session.get(LedgerState, 1) is not None
        assert SqlNodeStore(session).size() == 1


def test_tree_cannot_shrink(db_sessions: sessionmaker[Session]) -> None:
    _append(db_sessions, [b"a", b"b"])
    with db_sessions() as session, session.begin(), pytest.raises(LedgerError):
        SqlNodeStore(session, lock=True).append_nodes(2, 1, [])


def test_node_ids_pack_level_and_index_without_collisions() -> None:
    assert node_id(0, 5) == 5
    assert node_id(1, 0) == 1 << LEVEL_SHIFT
    assert node_id(3, 7) != node_id(7, 3)
    assert node_id(62, 0) < 1 << 63  # fits a signed 64-bit column


def test_a_state_row_edited_behind_the_stores_back_is_detected(db_sessions: sessionmaker[Session]) -> None:
    _append(db_sessions, [b"a", b"b", b"c"])
    with transaction(db_sessions) as session:
        session.execute(update(LedgerState).values(size=2))
    # The tree now believes size 2; appending would write node (0, 2) a second time.
    with pytest.raises(LedgerError, match="disagrees"), transaction(db_sessions) as session:
        MerkleTree(SqlNodeStore(session, lock=True)).append_many([b"d"])
    with db_sessions() as session:
        assert SqlNodeStore(session).size() == 2  # nothing was half-written
