"""The embedded log: same-transaction appends, serialised writers, checkpoints, receipts."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from sqlalchemy import func, select

from irmsia.bootstrap import Container
from irmsia.db.engine import transaction
from irmsia.db.imaging import StoredObject
from irmsia.db.ledger import LedgerCheckpoint, LedgerEntry, LedgerNode
from irmsia.db.models import AuditEvent
from irmsia.errors import NotFound, ProofError
from irmsia.ledger import entries
from irmsia.ledger.checkpoint import NoteSigner, open_checkpoint
from irmsia.ledger.merkle import MerkleTree
from irmsia.ledger.nodestore import MemoryNodeStore
from irmsia.ledger.service import Ledger
from irmsia.ledger.verifier import VerificationError, leaf_hash, verify_receipt
from irmsia.usecases.ledger import LedgerServices
from tests.conftest import FakeClock
from tests.integration.ledger.conftest import ORIGIN, Images
from tests.support import CLI_CTX


def _count(container: Container, table: type) -> int:
    with container.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def _entries(container: Container) -> list[bytes]:
    with container.sessions() as session:
        return list(session.scalars(select(LedgerEntry.data).order_by(LedgerEntry.idx)))


def test_every_registered_object_and_audit_record_is_in_the_log(container: Container, images: Images) -> None:
    stored = images.add_study(instances=3)
    container.accounts.create(CLI_CTX, "alice", "auditor", "correct horse battery staple")
    logged = [entries.parse_entry(data) for data in _entries(container)]
    object_ids = [e["object_id"] for e in logged if e and e["type"] == "object"]
    audit_ids = [e["id"] for e in logged if e and e["type"] == "audit"]
    assert object_ids == stored.object_ids
    with container.sessions() as session:
        assert audit_ids == list(session.scalars(select(AuditEvent.id).order_by(AuditEvent.seq)))
    assert len(audit_ids) == 1


def test_object_entries_carry_digests_and_opaque_ids_only(container: Container, images: Images) -> None:
    stored = images.add_study(instances=1)
    with container.sessions() as session:
        obj = session.get(StoredObject, stored.object_ids[0])
        assert obj is not None
        entry = entries.parse_entry(_entries(container)[0])
    assert entry == {
        "type": "object",
        "object_id": obj.id,
        "instance_id": obj.instance_id,
        "kind": "dicom",
        "frame": 0,
        "sha256": obj.sha256,
        "size": obj.size,
        "key_id": "kek-1",
        "time": "2026-03-01T09:00:00Z",
    }
    # No pseudonym, UID or storage key: only what the docstring of irmsia.ledger.entries lists.
    raw = _entries(container)[0].decode()
    assert "PSEUDO" not in raw and "2.25." not in raw and obj.storage_key not in raw


def test_a_failure_after_the_record_but_before_commit_leaves_neither(
    container: Container, images: Images, ledger: Ledger
) -> None:
    images.add_study(instances=1)
    before = (_count(container, StoredObject), _count(container, LedgerEntry), _count(container, LedgerNode))
    with container.sessions() as session:
        size_before = ledger.size(session)
    with pytest.raises(RuntimeError), transaction(container.sessions) as session:
        first = session.scalars(select(StoredObject)).first()
        assert first is not None
        clone = StoredObject(
            instance_id=first.instance_id,
            kind="png",
            frame=0,
            storage_key="objects/aa/clone.bin",
            sha256="0" * 64,
            size=1,
            plaintext_size=1,
            media_type="image/png",
            key_id="kek-1",
            wrapped_key=b"w",
            created_at=container.clock(),
        )
        session.add(clone)
        session.flush()
        assert ledger.register_object(session, clone) == size_before  # appended, not yet committed
        container.audit.record(session, CLI_CTX, "test.action")  # the hook appends too
        raise RuntimeError("crash before commit")
    after = (_count(container, StoredObject), _count(container, LedgerEntry), _count(container, LedgerNode))
    assert after == before
    with container.sessions() as session:
        assert ledger.size(session) == size_before
        assert session.scalars(select(AuditEvent).where(AuditEvent.action == "test.action")).first() is None


def test_the_audit_log_cannot_exist_without_the_transparency_log(container: Container) -> None:
    # By construction: every audit record, and every stored object (the ingest commit appends
    # their entries through AuditLog.record_many), goes into the log through the session that
    # writes it; there is no audit log without a transparency log to append to.
    from irmsia.usecases.audit import AuditLog

    with pytest.raises(TypeError, match="log"):
        AuditLog(sessions=container.sessions, clock=container.clock)  # type: ignore[call-arg]


def test_committed_records_and_entries_arrive_together(
    container: Container, ledger: Ledger, services: LedgerServices
) -> None:
    with transaction(container.sessions) as session:
        event = container.audit.record(session, CLI_CTX, "test.action", resource_id="img1")
        event_id = event.id
    with container.sessions() as session:
        found = ledger.entries_for(session, entries.AUDIT, ref_id=event_id)
        assert len(found) == 1 and found[0].subject_id == "img1"
        stored = session.scalars(select(AuditEvent).where(AuditEvent.id == event_id)).one()
        assert found[0].data == stored.canonical_bytes()


def test_bulk_records_log_the_same_entry_as_their_stored_rows(
    container: Container, ledger: Ledger, services: LedgerServices
) -> None:
    # record_many writes each entry from the row it inserts (no ORM object per record): the
    # entry must be exactly what the record, read back from the database, serialises to.
    from irmsia.usecases.audit import AuditRecord

    records = [
        AuditRecord(
            CLI_CTX, "test.bulk", resource_type="image", resource_id=f"img{n}", detail={"n": n, "z": [1]}
        )
        for n in range(3)
    ]
    with transaction(container.sessions) as session:
        container.audit.record_many(session, records, after=[b'{"type":"other"}'])
    with container.sessions() as session:
        stored = session.scalars(select(AuditEvent).where(AuditEvent.action == "test.bulk")).all()
        assert len(stored) == 3
        for event in stored:
            (found,) = ledger.entries_for(session, entries.AUDIT, ref_id=event.id)
            assert found.data == event.canonical_bytes()
            assert found.subject_id == event.resource_id


def test_concurrent_appends_serialise_into_one_dense_log(container: Container, ledger: Ledger) -> None:
    writers, per_writer = 4, 15
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(per_writer):
                with transaction(container.sessions) as session:
                    if i % 3 == 0:
                        ledger.append_many(session, [b"w%d-%d-%d" % (worker, i, j) for j in range(3)])
                    else:
                        ledger.append(session, b"w%d-%d" % (worker, i))
        except BaseException as exc:  # collected and re-raised by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    data = _entries(container)
    expected = writers * (per_writer + 2 * len(range(0, per_writer, 3)))
    assert len(data) == expected
    with container.sessions() as session:
        assert ledger.size(session) == expected
        assert list(session.scalars(select(LedgerEntry.idx).order_by(LedgerEntry.idx))) == list(
            range(expected)
        )
        reference = MerkleTree(MemoryNodeStore())
        reference.append_many(data)
        assert ledger.tree(session).root() == reference.root()


def test_append_many_returns_the_first_index_and_keeps_order(container: Container, ledger: Ledger) -> None:
    with transaction(container.sessions) as session:
        assert ledger.append_many(session, [b"a", b"b"]) == 0
        assert ledger.append_many(session, [b"c"]) == 2
        assert ledger.append_many(session, []) == 3
    assert _entries(container) == [b"a", b"b", b"c"]


def test_checkpoints_are_signed_stored_and_reused_until_the_log_grows(
    container: Container, ledger: Ledger, signer: NoteSigner, clock: FakeClock
) -> None:
    with transaction(container.sessions) as session:
        ledger.append_many(session, [b"x", b"y", b"z"])
        first = ledger.sign_checkpoint(session)
    clock.advance(minutes=5)
    with transaction(container.sessions) as session:
        assert ledger.sign_checkpoint(session) == first
        ledger.append(session, b"w")
        second = ledger.sign_checkpoint(session)
    assert (first.size, second.size) == (3, 4)
    checkpoint = open_checkpoint(second.note, signer.verifier, origin=ORIGIN)
    assert checkpoint.root_hash == second.root_hash
    assert checkpoint.timestamp_ms == int(clock.now.timestamp() * 1000)
    assert _count(container, LedgerCheckpoint) == 2


def test_receipt_verifies_offline_with_the_published_key(
    container: Container, images: Images, services: LedgerServices
) -> None:
    stored = images.add_study(instances=2)
    receipt = services.reads.receipt(CLI_CTX, stored.object_ids[1])
    verified = verify_receipt(receipt.json, services.reads.public_key(), origin=ORIGIN)
    assert verified.leaf_index == receipt.index == 1
    assert entries.parse_entry(verified.entry)["object_id"] == stored.object_ids[1]
    assert verified.checkpoint.size == receipt.checkpoint_size >= 2


def test_receipt_of_an_unlogged_object_is_not_found(services: LedgerServices) -> None:
    with pytest.raises(NotFound):
        services.reads.receipt(CLI_CTX, "f" * 32)


def test_forged_receipts_and_proofs_are_rejected(
    container: Container, images: Images, services: LedgerServices
) -> None:
    stored = images.add_study(instances=3)
    receipt = json.loads(services.reads.receipt(CLI_CTX, stored.object_ids[0]).json)
    key = services.reads.public_key()

    other_entry = dict(receipt, entry=base64.b64encode(b'{"type":"object","sha256":"00"}').decode())
    proof = [bytearray(base64.b64decode(item)) for item in receipt["inclusion_proof"]]
    proof[0][0] ^= 1
    bad_proof = dict(receipt, inclusion_proof=[base64.b64encode(bytes(p)).decode() for p in proof])
    moved = dict(receipt, leaf_index=receipt["leaf_index"] + 1)
    impostor = NoteSigner.generate(ORIGIN)
    text = receipt["checkpoint"].split("\n\n")[0] + "\n"
    resigned = dict(receipt, checkpoint=text + "\n" + impostor.signature_line(text) + "\n")
    for forged in (other_entry, bad_proof, moved, resigned):
        with pytest.raises(VerificationError):
            verify_receipt(forged, key, origin=ORIGIN)
    verify_receipt(receipt, key, origin=ORIGIN)  # the genuine one still passes


def test_forged_checkpoint_signature_is_rejected(container: Container, ledger: Ledger) -> None:
    with transaction(container.sessions) as session:
        ledger.append(session, b"entry")
        note = ledger.sign_checkpoint(session).note
    body, signature = note.split("\n\n")
    raw = bytearray(base64.b64decode(signature.rsplit(" ", 1)[1]))
    raw[-1] ^= 0x01
    forged = body + "\n\n" + signature.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    with pytest.raises(ProofError):
        open_checkpoint(forged, ledger.verifier, origin=ORIGIN)
    with pytest.raises(ProofError):
        open_checkpoint(note.replace("\n1\n", "\n2\n", 1), ledger.verifier, origin=ORIGIN)


def test_inclusion_and_consistency_proofs_from_the_database_verify(
    container: Container, ledger: Ledger
) -> None:
    from irmsia.ledger.verifier import verify_consistency, verify_inclusion

    data = [b"entry-%d" % i for i in range(37)]
    with transaction(container.sessions) as session:
        ledger.append_many(session, data[:20])
        small = ledger.sign_checkpoint(session)
        ledger.append_many(session, data[20:])
        large = ledger.sign_checkpoint(session)
    with container.sessions() as session:
        for index in (0, 13, 19):
            proof = ledger.inclusion_proof(session, index, small.size)
            verify_inclusion(leaf_hash(data[index]), index, small.size, proof, small.root_hash)
        proof = ledger.consistency_proof(session, small.size, large.size)
    verify_consistency(small.size, large.size, proof, small.root_hash, large.root_hash)
    with pytest.raises(VerificationError):
        verify_consistency(small.size, large.size, proof[:-1], small.root_hash, large.root_hash)
