"""Anchors: the lazy registry, the mock log, IPFS and Fabric against loopback stand-ins."""

from __future__ import annotations

import base64
import hashlib
import sys
from collections.abc import Iterator

import httpx
import pytest

from irmsia.errors import ConfigError, Conflict, ExternalServiceError, NotFound, ServiceTimeout
from irmsia.ledger.anchors import ANCHORS, Anchor, AnchorReceipt, create_anchor
from irmsia.ledger.anchors.fabric import FabricAnchor
from irmsia.ledger.anchors.ipfs import IpfsAnchor
from irmsia.ledger.anchors.mock import MockAnchor
from irmsia.ledger.checkpoint import NoteSigner, make_checkpoint, open_checkpoint, sign_checkpoint
from irmsia.ledger.verifier import Checkpoint
from tests.integration.ledger.fakes import FakeFabricGateway, FakeKubo, raw_cid, serve

ORIGIN = "irmsia.test/ledger"
SIGNER = NoteSigner.generate(ORIGIN)


def _signed(size: int, seed: bytes = b"") -> tuple[Checkpoint, str]:
    root = hashlib.sha256(b"root-%d" % size + seed).digest()
    checkpoint = make_checkpoint(ORIGIN, size, root)
    return checkpoint, sign_checkpoint(checkpoint, SIGNER)


@pytest.fixture
def kubo_address() -> Iterator[tuple[FakeKubo, str, int]]:
    node = FakeKubo()
    with serve(node.handler()) as (host, port):
        yield node, host, port


@pytest.fixture
def kubo(kubo_address: tuple[FakeKubo, str, int]) -> Iterator[tuple[FakeKubo, IpfsAnchor]]:
    node, host, port = kubo_address
    anchor = IpfsAnchor(host, port, timeout=5.0)
    yield node, anchor
    anchor.close()


@pytest.fixture
def fabric() -> Iterator[tuple[FakeFabricGateway, FabricAnchor]]:
    gateway = FakeFabricGateway()
    with serve(gateway.handler()) as (host, port):
        anchor = FabricAnchor(f"http://{host}:{port}", "mychannel", "irmsia-ledger", timeout=5.0)
        yield gateway, anchor
        anchor.close()


# --- registry ---------------------------------------------------------------------------


def test_registry_builds_each_kind_and_they_satisfy_the_protocol() -> None:
    built = [
        create_anchor("mock"),
        create_anchor("ipfs", host="127.0.0.1", port=1),
        create_anchor("fabric", gateway_url="http://127.0.0.1:1", channel="c", chaincode="cc"),
    ]
    assert [anchor.kind for anchor in built] == ["mock", "ipfs", "fabric"]
    assert all(isinstance(anchor, Anchor) for anchor in built)
    for anchor in built:
        anchor.close()


def test_unknown_anchor_kind_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"ethereum.*fabric, ipfs, mock"):
        create_anchor("ethereum")


def test_registry_is_lazy_and_a_missing_module_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(ANCHORS) == {"mock", "ipfs", "fabric"}
    monkeypatch.setitem(ANCHORS, "broken", "irmsia.ledger.anchors.not_installed:Nothing")
    monkeypatch.delitem(sys.modules, "irmsia.ledger.anchors.not_installed", raising=False)
    with pytest.raises(ConfigError, match="not installed"):
        create_anchor("broken")


# --- mock -------------------------------------------------------------------------------


def test_mock_anchor_is_an_append_only_log_that_refuses_rewrites() -> None:
    anchor = MockAnchor()
    first, note = _signed(5)
    receipt = anchor.publish(first, note)
    assert receipt.reference == "mock:0" and receipt.detail["anchor_size"] == 1
    assert anchor.publish(first, note) == receipt  # idempotent
    assert anchor.fetch(receipt) == note
    forged, forged_note = _signed(5, b"other root")
    with pytest.raises(Conflict):
        anchor.publish(forged, forged_note)
    later = anchor.publish(*_signed(9))
    assert later.reference == "mock:1" and later.detail["anchor_size"] == 2


def test_mock_anchor_fetch_of_an_unknown_receipt_is_not_found() -> None:
    with pytest.raises(NotFound):
        MockAnchor().fetch(AnchorReceipt(kind="mock", reference="mock:7"))


# --- ipfs -------------------------------------------------------------------------------


def test_ipfs_anchor_adds_pins_and_records_a_content_address(kubo: tuple[FakeKubo, IpfsAnchor]) -> None:
    node, anchor = kubo
    checkpoint, note = _signed(12)
    receipt = anchor.publish(checkpoint, note)
    assert receipt.kind == "ipfs"
    assert receipt.reference == raw_cid(note.encode())  # content-addressed: same bytes, same id
    assert receipt.detail["sha256"] == hashlib.sha256(note.encode()).hexdigest()
    assert receipt.reference in node.pins
    assert node.calls == ["/api/v0/add", "/api/v0/cat", "/api/v0/pin/ls"]
    fetched = anchor.fetch(receipt)
    assert fetched == note
    assert open_checkpoint(fetched, SIGNER.verifier, origin=ORIGIN) == checkpoint


def test_ipfs_cat_returns_exactly_what_was_added(kubo_address: tuple[FakeKubo, str, int]) -> None:
    node, host, port = kubo_address
    anchor = IpfsAnchor(host, port)
    checkpoint, note = _signed(3)
    receipt = anchor.publish(checkpoint, note)
    anchor.close()
    with httpx.Client() as http:
        answer = http.post(f"http://{host}:{port}/api/v0/cat", params={"arg": receipt.reference})
    assert answer.content == note.encode()
    assert answer.content == node.blocks[receipt.reference]
    assert raw_cid(answer.content) == receipt.reference


def test_ipfs_node_returning_other_bytes_is_caught_on_publish_and_on_fetch(
    kubo: tuple[FakeKubo, IpfsAnchor],
) -> None:
    node, anchor = kubo
    receipt = anchor.publish(*_signed(4))
    node.lie = True
    with pytest.raises(ExternalServiceError, match="does not match"):
        anchor.fetch(receipt)
    with pytest.raises(ExternalServiceError, match="different content"):
        anchor.publish(*_signed(5))


def test_ipfs_unpinned_content_fails_publication(kubo: tuple[FakeKubo, IpfsAnchor]) -> None:
    node, anchor = kubo
    node.pin_on_add = False
    with pytest.raises(ExternalServiceError, match="did not pin"):
        anchor.publish(*_signed(6))


def test_ipfs_unreachable_node_is_an_external_service_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    anchor = IpfsAnchor(http=httpx.Client(transport=httpx.MockTransport(refuse)))
    with pytest.raises(ExternalServiceError, match="IPFS add failed: ConnectError"):
        anchor.publish(*_signed(1))


def test_ipfs_timeout_is_a_service_timeout() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    anchor = IpfsAnchor(http=httpx.Client(transport=httpx.MockTransport(slow)))
    with pytest.raises(ServiceTimeout):
        anchor.publish(*_signed(1))


# --- fabric -----------------------------------------------------------------------------


def test_fabric_anchor_submits_and_reads_the_checkpoint_back(
    fabric: tuple[FakeFabricGateway, FabricAnchor],
) -> None:
    gateway, anchor = fabric
    checkpoint, note = _signed(20)
    receipt = anchor.publish(checkpoint, note)
    record = gateway.world[(ORIGIN, 20)]
    assert receipt.reference == record["tx_id"]
    assert receipt.detail["root"] == base64.b64encode(checkpoint.root_hash).decode()
    assert anchor.fetch(receipt) == note


def test_fabric_republishing_the_same_checkpoint_is_idempotent(
    fabric: tuple[FakeFabricGateway, FabricAnchor],
) -> None:
    gateway, anchor = fabric
    checkpoint, note = _signed(21)
    assert anchor.publish(checkpoint, note).reference == anchor.publish(checkpoint, note).reference
    assert gateway.transactions == 1


def test_fabric_chaincode_refuses_a_different_root_for_the_same_size(
    fabric: tuple[FakeFabricGateway, FabricAnchor],
) -> None:
    gateway, anchor = fabric
    checkpoint, note = _signed(22)
    anchor.publish(checkpoint, note)
    with pytest.raises(Conflict, match="different root"):
        anchor.publish(*_signed(22, b"rewritten history"))
    assert gateway.world[(ORIGIN, 22)]["note"] == note


def test_fabric_missing_record_is_not_found(fabric: tuple[FakeFabricGateway, FabricAnchor]) -> None:
    _, anchor = fabric
    receipt = AnchorReceipt(kind="fabric", reference="tx", detail={"origin": ORIGIN, "checkpoint_size": 99})
    with pytest.raises(NotFound):
        anchor.fetch(receipt)


def test_fabric_gateway_error_is_an_external_service_error() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "peer unavailable"})

    anchor = FabricAnchor("http://gw", "c", "cc", http=httpx.Client(transport=httpx.MockTransport(broken)))
    with pytest.raises(ExternalServiceError, match="HTTP 503"):
        anchor.publish(*_signed(1))
