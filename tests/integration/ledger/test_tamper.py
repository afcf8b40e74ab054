"""Tampering in every way verification knows is detected and reported as exactly what it is."""

from __future__ import annotations

import base64
import hashlib

import pytest
from sqlalchemy import select

from irmsia.bootstrap import Container
from irmsia.db.engine import transaction
from irmsia.db.ledger import LedgerCheckpoint, LedgerEntry
from irmsia.errors import LedgerError, NotFound
from irmsia.ledger import entries
from irmsia.ledger.checkpoint import NoteSigner
from irmsia.ledger.integrity import MismatchKind
from irmsia.ledger.service import Ledger
from irmsia.ledger.sqlstore import node_id
from irmsia.usecases.ledger import LedgerServices
from irmsia.usecases.verify import VerificationReport, VerifyScope
from tests.integration.ledger.conftest import ORIGIN, Images, StoredStudy
from tests.support import CLI_CTX


@pytest.fixture
def study(images: Images, services: LedgerServices) -> StoredStudy:
    """Three logged objects, a signed checkpoint anchored on the mock anchor, then one more object."""
    stored = images.add_study(instances=3)
    records = services.anchoring.publish(CLI_CTX)
    assert [r.status for r in records] == ["anchored"]
    later = images.add_study(instances=1)
    return StoredStudy(
        stored.study_id, stored.instance_ids + later.instance_ids, stored.object_ids + later.object_ids
    )


def _verify(services: LedgerServices, scope: VerifyScope | None = None) -> VerificationReport:
    return services.verification.run(CLI_CTX, scope, trigger="cli")


def _object_index(container: Container, object_id: str) -> int:
    with container.sessions() as session:
        return session.scalars(
            select(LedgerEntry.idx).where(LedgerEntry.kind == "object", LedgerEntry.ref_id == object_id)
        ).one()


def test_an_untouched_platform_verifies_clean(study: StoredStudy, services: LedgerServices) -> None:
    report = _verify(services)
    assert report.ok, report.mismatches
    assert report.kinds == set()
    assert report.objects_checked == 4
    assert report.bytes_hashed == 4 * 2048
    assert report.entries_checked == report.log_size
    assert report.anchored_kind == "mock" and report.anchored_size is not None
    assert report.checkpoint_size == report.anchored_size


def test_edited_blob_file_is_blob_modified(
    study: StoredStudy, images: Images, services: LedgerServices
) -> None:
    victim = study.object_ids[1]
    path = images.blob_path(victim)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    report = _verify(services)
    assert report.kinds == {"blob_modified"}
    assert [(m.kind, m.object_id) for m in report.mismatches] == [(MismatchKind.BLOB_MODIFIED, victim)]


def test_deleted_blob_is_blob_missing(study: StoredStudy, images: Images, services: LedgerServices) -> None:
    victim = study.object_ids[0]
    images.blob_path(victim).unlink()
    report = _verify(services)
    assert report.kinds == {"blob_missing"}
    assert report.mismatches[0].object_id == victim


def test_edited_sha256_column_is_db_hash_edited(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    victim = study.object_ids[2]
    images.sql("UPDATE stored_objects SET sha256 = :h WHERE id = :id", h="ab" * 32, id=victim)
    report = _verify(services)
    assert report.kinds == {"db_hash_edited"}
    mismatch = report.mismatches[0]
    assert (mismatch.object_id, mismatch.index) == (victim, _object_index(container, victim))


def test_blob_and_column_replaced_together_are_both_reported(
    study: StoredStudy, images: Images, services: LedgerServices
) -> None:
    victim = study.object_ids[0]
    forged = b"substituted ciphertext"
    images.blob_path(victim).write_bytes(forged)
    images.sql(
        "UPDATE stored_objects SET sha256 = :h WHERE id = :id",
        h=hashlib.sha256(forged).hexdigest(),
        id=victim,
    )
    assert _verify(services).kinds == {"db_hash_edited", "blob_modified"}


def test_altered_entry_row_is_entry_altered(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    victim = study.object_ids[1]
    index = _object_index(container, victim)
    with container.sessions() as session:
        data = session.get(LedgerEntry, index).data
    # Make the log "agree" with a substituted blob: same entry, another digest.
    altered = data.replace(entries.parse_entry(data)["sha256"].encode(), b"cd" * 32)
    images.sql("UPDATE ledger_entries SET data = :d WHERE idx = :i", d=altered, i=index)
    report = _verify(services)
    assert report.kinds == {"entry_altered"}
    assert [m.index for m in report.mismatches] == [index]


def test_edited_lookup_columns_are_entry_altered(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    index = _object_index(container, study.object_ids[0])
    images.sql("UPDATE ledger_entries SET subject_id = 'someoneelse' WHERE idx = :i", i=index)
    report = _verify(services)
    assert report.kinds == {"entry_altered"}
    assert report.mismatches[0].index == index


def test_deleted_entry_row_is_entry_deleted(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    victim = study.object_ids[0]
    index = _object_index(container, victim)
    images.sql("DELETE FROM ledger_entries WHERE idx = :i", i=index)
    report = _verify(services)
    assert report.kinds == {"entry_deleted"}
    assert {(m.index, m.object_id) for m in report.mismatches} == {(index, None), (None, victim)}


def test_swapped_entry_rows_are_entry_reordered(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    first, second = (_object_index(container, o) for o in study.object_ids[:2])
    images.sql("UPDATE ledger_entries SET idx = -1 WHERE idx = :a", a=first)
    images.sql("UPDATE ledger_entries SET idx = :a WHERE idx = :b", a=first, b=second)
    images.sql("UPDATE ledger_entries SET idx = :b WHERE idx = -1", b=second)
    report = _verify(services)
    assert report.kinds == {"entry_reordered"}
    assert sorted(m.index for m in report.mismatches) == [first, second]
    assert f"index {second}" in next(m.detail for m in report.mismatches if m.index == first)


def test_swapped_entry_bytes_are_entry_reordered(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    first, second = (_object_index(container, o) for o in study.object_ids[:2])
    with container.sessions() as session:
        a, b = (session.get(LedgerEntry, i).data for i in (first, second))
    images.sql("UPDATE ledger_entries SET data = :d WHERE idx = :i", d=b, i=first)
    images.sql("UPDATE ledger_entries SET data = :d WHERE idx = :i", d=a, i=second)
    assert _verify(services).kinds == {"entry_reordered"}


def test_forged_checkpoint_signature_is_checkpoint_forged(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    with transaction(container.sessions) as session:
        latest = services.ledger.sign_checkpoint(session)
    body, signature_line = latest.note.split("\n\n")
    name, encoded = signature_line.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(encoded))
    raw[10] ^= 0x40
    forged = f"{body}\n\n{name} {base64.b64encode(bytes(raw)).decode()}\n"
    images.sql("UPDATE ledger_checkpoints SET note = :n WHERE size = :s", n=forged, s=latest.size)
    report = _verify(services)
    assert report.kinds == {"checkpoint_forged"}
    assert report.mismatches[0].checkpoint_size == latest.size


def test_checkpoint_signed_by_another_key_is_checkpoint_forged(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    from irmsia.ledger.checkpoint import make_checkpoint, sign_checkpoint

    with transaction(container.sessions) as session:
        latest = services.ledger.sign_checkpoint(session)
    impostor = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(make_checkpoint(ORIGIN, latest.size, b"\x07" * 32), impostor)
    images.sql(
        "UPDATE ledger_checkpoints SET note = :n, root_hash = :r WHERE size = :s",
        n=note,
        r=b"\x07" * 32,
        s=latest.size,
    )
    assert _verify(services).kinds == {"checkpoint_forged"}


def test_log_rewritten_without_the_key_is_checkpoint_inconsistent(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container, ledger: Ledger
) -> None:
    """An attacker rebuilds entries *and* hashes consistently, but cannot re-sign the checkpoints."""
    _rewrite_log(images, container, ledger, study.object_ids[0], keep_checkpoints=True)
    report = _verify(services)
    assert report.kinds == {"checkpoint_inconsistent"}


def test_log_rewritten_and_resigned_with_the_key_is_caught_by_the_anchor(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container, ledger: Ledger
) -> None:
    """Even with the signing key, the checkpoint published before cannot be taken back."""
    _rewrite_log(images, container, ledger, study.object_ids[0], keep_checkpoints=False)
    with transaction(container.sessions) as session:
        ledger.sign_checkpoint(session)
    # Covering tracks in the database does not help: the anchor is read back.
    images.sql("UPDATE ledger_anchors SET note = ''")
    report = _verify(services)
    assert report.kinds == {"checkpoint_inconsistent"}
    assert any("differs from the anchor" in warning for warning in report.warnings)
    assert any("anchored" in m.detail for m in report.mismatches)


def test_edited_subtree_hash_is_checkpoint_inconsistent(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    with transaction(container.sessions) as session:
        latest = services.ledger.sign_checkpoint(session)
    level = latest.size.bit_length() - 1  # the first peak of the latest tree
    images.sql("UPDATE ledger_nodes SET hash = :h WHERE id = :id", h=b"\x00" * 32, id=node_id(level, 0))
    report = _verify(services)
    assert report.kinds == {"checkpoint_inconsistent"}


def test_truncated_log_is_entry_deleted(
    study: StoredStudy, images: Images, services: LedgerServices, container: Container
) -> None:
    with transaction(container.sessions) as session:
        latest = services.ledger.sign_checkpoint(session)
    last = latest.size - 1
    images.sql("DELETE FROM ledger_entries WHERE idx = :i", i=last)
    images.sql("UPDATE ledger_state SET size = :s", s=last)
    report = _verify(services)
    assert report.kinds == {"entry_deleted"}
    # The last entry registered the last object: both the index and the object lack it now.
    assert {(m.index, m.object_id) for m in report.mismatches} == {(last, None), (None, study.object_ids[-1])}
    # The log now refuses appends rather than overwrite committed hashes: audited actions fail
    # closed, and the report says its own run could not be audited.
    assert any("could not be audited" in warning for warning in report.warnings)
    with pytest.raises(LedgerError):
        container.audit.record_now(CLI_CTX, "test.action")


def test_every_mismatch_kind_has_a_test_above() -> None:
    names = {name for name in globals() if name.startswith("test_")}
    for kind in MismatchKind:
        assert any(kind.value.split("_")[1] in name for name in names), kind


def test_scope_limits_the_objects_rehashed(
    study: StoredStudy, images: Images, services: LedgerServices
) -> None:
    other = images.add_study(instances=2)
    assert _verify(services, VerifyScope(study_id=other.study_id)).objects_checked == 2
    assert _verify(services, VerifyScope(sample=3)).objects_checked == 3
    assert _verify(services, VerifyScope()).objects_checked == 6
    with pytest.raises(NotFound):
        _verify(services, VerifyScope(study_id="0" * 32))


def test_results_are_stored_and_the_last_one_is_readable(
    study: StoredStudy, images: Images, services: LedgerServices
) -> None:
    images.blob_path(study.object_ids[0]).unlink()
    report = _verify(services)
    last = services.verification.last(CLI_CTX)
    assert last.id == report.id
    assert (last.ok, last.summary, last.scope, last.trigger) == (False, {"blob_missing": 1}, "all", "cli")
    assert last.mismatches == report.mismatches


def _rewrite_log(
    images: Images, container: Container, ledger: Ledger, victim: str, *, keep_checkpoints: bool
) -> None:
    """Substitute ``victim``'s blob and rebuild the whole log to match, entries and hashes alike."""
    forged = b"substituted ciphertext"
    digest = hashlib.sha256(forged).hexdigest()
    with container.sessions() as session:
        data = list(session.scalars(select(LedgerEntry.data).order_by(LedgerEntry.idx)))
        checkpoints = list(session.scalars(select(LedgerCheckpoint)))
        session.expunge_all()
    rewritten = []
    for entry in data:
        parsed = entries.parse_entry(entry)
        if parsed and parsed.get("object_id") == victim:
            entry = entry.replace(parsed["sha256"].encode(), digest.encode())
        rewritten.append(entry)
    for table in ("ledger_entries", "ledger_nodes", "ledger_state", "ledger_checkpoints"):
        images.sql(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
    with transaction(container.sessions) as session:
        ledger.append_many(session, rewritten)
        if keep_checkpoints:
            session.add_all(
                LedgerCheckpoint(size=c.size, root_hash=c.root_hash, note=c.note, created_at=c.created_at)
                for c in checkpoints
            )
    images.sql("UPDATE stored_objects SET sha256 = :h WHERE id = :id", h=digest, id=victim)
    images.blob_path(victim).write_bytes(forged)
