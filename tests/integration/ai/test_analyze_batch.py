"""Analysing several stored images at once: one batch per provider, one transaction for the results."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import func, select

from irmsia.bootstrap import Container
from irmsia.db.analysis import Analysis
from irmsia.db.ledger import LedgerEntry
from irmsia.db.models import AuditEvent
from irmsia.errors import InvalidDicom, NotFound
from irmsia.usecases.analyze import to_stored
from irmsia.usecases.ingest import IncomingFile
from tests.factories import make_cr, make_ct, to_bytes
from tests.support import CLI_CTX

pytestmark = pytest.mark.db


def _stored(container: Container, datasets: list[Dataset]) -> list[tuple[str, Dataset]]:
    """Ingest ``datasets``; each image id with its de-identified dataset as stored."""
    files = [IncomingFile(data=iter([to_bytes(ds)]), label=str(n)) for n, ds in enumerate(datasets, 1)]
    batch = container.ingest.submit(CLI_CTX, files, wait=True)
    pairs = []
    for item in batch.files:
        assert item.result.get("status") == "stored", item
        image_id = str(item.result["image_id"])
        download = container.retrieve.download(CLI_CTX, image_id, "dicom")
        pairs.append((image_id, pydicom.dcmread(io.BytesIO(b"".join(download.chunks)))))
    return pairs


def _counts(container: Container) -> tuple[int, int, int]:
    with container.sessions() as session:
        analyses = session.scalar(select(func.count()).select_from(Analysis))
        entries = session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "analysis")
        )
        audited = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "ai.analyze")
        )
    return int(analyses or 0), int(entries or 0), int(audited or 0)


def test_several_datasets_are_analysed_stored_registered_and_audited_in_order(container: Container) -> None:
    pairs = _stored(container, [make_cr(seed=1), make_ct(), make_cr(seed=2)])

    stored = container.analyze.analyze_datasets(CLI_CTX, pairs)

    assert [s.image_id for s in stored] == [image_id for image_id, _ in pairs]
    assert all(s.result.status == "ok" and s.result.provenance.provider == "builtin" for s in stored)
    assert _counts(container) == (3, 3, 3)
    with container.sessions() as session:
        rows = {row.id: row for row in session.scalars(select(Analysis)).all()}
        for item in stored:
            row = rows[item.id]
            assert (row.image_id, row.series_id, row.study_id) == (
                item.image_id,
                item.series_id,
                item.study_id,
            )
            assert row.patient_pseudonym == item.patient_pseudonym
            assert to_stored(row).result == item.result  # the stored bytes match their hash
        refs = set(session.scalars(select(LedgerEntry.ref_id).where(LedgerEntry.kind == "analysis")).all())
    assert refs == {item.id for item in stored}
    for image_id, _ in pairs:
        assert [a.id for a in container.analyze.for_image(CLI_CTX, image_id)] == [
            s.id for s in stored if s.image_id == image_id
        ]


def test_one_unknown_image_stores_nothing(container: Container) -> None:
    [(image_id, ds)] = _stored(container, [make_cr()])
    result = container.analyze.runner.analyze(ds)

    with pytest.raises(NotFound):
        container.analyze.store_many(CLI_CTX, [(image_id, result), ("0" * 32, result)])

    assert _counts(container) == (0, 0, 0)


def test_one_non_image_object_refuses_the_batch_and_stores_nothing(container: Container) -> None:
    [(image_id, ds)] = _stored(container, [make_cr()])
    document = make_cr()
    del document.PixelData
    document.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR

    with pytest.raises(InvalidDicom):
        container.analyze.analyze_datasets(CLI_CTX, [(image_id, ds), (image_id, document)])

    assert _counts(container) == (0, 0, 0)


def test_storing_one_result_still_registers_and_audits_it(container: Container) -> None:
    [(image_id, ds)] = _stored(container, [make_cr()])

    stored = container.analyze.store(CLI_CTX, image_id, container.analyze.runner.analyze(ds))

    assert stored.image_id == image_id
    assert _counts(container) == (1, 1, 1)
    assert container.analyze.store_many(CLI_CTX, []) == []
