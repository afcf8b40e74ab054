"""Anchoring: several anchors at once, against loopback IPFS and Fabric stand-ins; the scheduler."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from irmsia.bootstrap import Container
from irmsia.db.ledger import LedgerAnchor
from irmsia.errors import InvalidRequest
from irmsia.ledger.anchors.fabric import FabricAnchor
from irmsia.ledger.anchors.ipfs import IpfsAnchor
from irmsia.ledger.checkpoint import open_checkpoint
from irmsia.ledger.scheduler import PeriodicJob, Scheduler
from irmsia.ledger.service import Ledger
from irmsia.usecases.ledger import LedgerServices, build_ledger_services, make_scheduler
from tests.integration.ledger.conftest import ORIGIN, Images
from tests.integration.ledger.fakes import FakeFabricGateway, FakeKubo, raw_cid, serve
from tests.support import CLI_CTX


@pytest.fixture
def kubo() -> Iterator[tuple[FakeKubo, str, int]]:
    node = FakeKubo()
    with serve(node.handler()) as (host, port):
        yield node, host, port


@pytest.fixture
def gateway() -> Iterator[tuple[FakeFabricGateway, str]]:
    fake = FakeFabricGateway()
    with serve(fake.handler()) as (host, port):
        yield fake, f"http://{host}:{port}"


@pytest.fixture
def external(
    container: Container,
    ledger: Ledger,
    kubo: tuple[FakeKubo, str, int],
    gateway: tuple[FakeFabricGateway, str],
) -> Iterator[LedgerServices]:
    """The ledger with BLOCKCHAIN_TYPE=ipfs,fabric."""
    _, host, port = kubo
    built = build_ledger_services(
        sessions=container.sessions,
        clock=container.clock,
        audit=container.audit,
        blobs=container.blobs,
        ledger=ledger,
        anchors=[IpfsAnchor(host, port, timeout=5.0), FabricAnchor(gateway[1], "mychannel", "irmsia-ledger")],
    )
    yield built
    built.close()


def test_checkpoint_is_published_to_every_configured_anchor(
    external: LedgerServices,
    images: Images,
    kubo: tuple[FakeKubo, str, int],
    gateway: tuple[FakeFabricGateway, str],
) -> None:
    images.add_study(instances=2)
    records = external.anchoring.publish(CLI_CTX)
    assert [(r.kind, r.status) for r in records] == [("ipfs", "anchored"), ("fabric", "anchored")]
    ipfs, fabric = records
    note = kubo[0].blocks[ipfs.reference or ""].decode()
    assert ipfs.reference == raw_cid(note.encode()) and ipfs.receipt["cid"] == ipfs.reference
    assert open_checkpoint(note, external.ledger.verifier, origin=ORIGIN).size == ipfs.checkpoint_size
    assert gateway[0].world[(ORIGIN, fabric.checkpoint_size)]["tx_id"] == fabric.reference
    listed = external.reads.anchors(CLI_CTX)
    assert {item.id for item in listed.items} == {ipfs.id, fabric.id}


def test_verification_reads_the_anchored_checkpoint_back(external: LedgerServices, images: Images) -> None:
    images.add_study(instances=1)
    external.anchoring.publish(CLI_CTX)
    report = external.verification.run(CLI_CTX)
    assert report.ok and report.warnings == []
    assert report.anchored_kind in {"ipfs", "fabric"} and report.anchored_size == report.checkpoint_size


def test_an_unreachable_anchor_is_a_warning_and_the_stored_copy_is_used(
    container: Container, ledger: Ledger, images: Images
) -> None:
    node = FakeKubo()
    with serve(node.handler()) as (host, port):
        anchor = IpfsAnchor(host, port, timeout=2.0)
        services = build_ledger_services(
            sessions=container.sessions,
            clock=container.clock,
            audit=container.audit,
            blobs=container.blobs,
            ledger=ledger,
            anchors=[anchor],
        )
        images.add_study(instances=1)
        assert services.anchoring.publish(CLI_CTX)[0].status == "anchored"
    report = services.verification.run(CLI_CTX)  # the node is gone now
    services.close()
    assert report.ok
    assert report.warnings == ["anchor ipfs could not be read back; used the stored copy"]


def test_a_failed_publication_is_recorded_with_its_error(
    container: Container, ledger: Ledger, images: Images
) -> None:
    fake = FakeFabricGateway(channel="other-channel")  # every call lands on an unknown path: 404
    with serve(fake.handler()) as (host, port):
        services = build_ledger_services(
            sessions=container.sessions,
            clock=container.clock,
            audit=container.audit,
            blobs=container.blobs,
            ledger=ledger,
            anchors=[FabricAnchor(f"http://{host}:{port}", "mychannel", "irmsia-ledger")],
        )
        images.add_study(instances=1)
        (record,) = services.anchoring.publish(CLI_CTX)
        services.close()
    assert record.status == "failed" and record.reference is None
    assert record.error is not None and record.error.startswith("external_service_error")
    with container.sessions() as session:
        event = session.scalars(select(LedgerAnchor)).one()
        assert event.status == "failed"


def test_the_scheduled_job_publishes_only_what_is_not_anchored_yet(
    external: LedgerServices, images: Images, gateway: tuple[FakeFabricGateway, str]
) -> None:
    images.add_study(instances=1)
    first = external.anchoring.publish_scheduled()
    assert len(first) == 2
    assert external.anchoring.publish_scheduled() == []  # same size, already anchored everywhere
    images.add_study(instances=1)
    assert [r.kind for r in external.anchoring.publish_scheduled()] == ["ipfs", "fabric"]
    assert gateway[0].transactions == 2


def test_scheduler_runs_jobs_until_stopped_and_survives_failures() -> None:
    ran = threading.Event()
    failures = []

    def failing() -> None:
        failures.append(1)
        raise InvalidRequest("boom")

    scheduler = Scheduler(
        [
            PeriodicJob("ok", 0.01, ran.set),
            PeriodicJob("bad", 0.01, failing),
            PeriodicJob("off", 0, ran.clear),
        ]
    )
    assert [job.name for job in scheduler.jobs] == ["ok", "bad"]
    scheduler.start()
    try:
        assert ran.wait(10)
        while len(failures) < 2:  # the failing job keeps being scheduled
            threading.Event().wait(0.01)
        assert scheduler.running
    finally:
        scheduler.stop()
    assert not scheduler.running


def test_make_scheduler_wires_checkpoint_anchor_and_verify_jobs(services: LedgerServices) -> None:
    scheduler = make_scheduler(services, checkpoint_interval=60, anchor_interval=0, verify_interval=3600)
    assert [job.name for job in scheduler.jobs] == ["ledger-checkpoint", "ledger-verify"]
    for job in scheduler.jobs:
        job.run()  # each job works when called directly
    last = services.verification.last(CLI_CTX)
    assert last.trigger == "scheduled" and last.ok
