"""Real ingest feeds the ledger: objects and audit records are logged, receipts verify offline,
and tampering with what ingest stored is detected."""

from __future__ import annotations

from fastapi.testclient import TestClient

from irmsia.bootstrap import Container
from irmsia.db.imaging import StoredObject
from irmsia.ledger.verifier import verify_receipt
from tests.factories import make_ct, to_bytes
from tests.integration.ingest.conftest import upload


def test_ingested_objects_get_receipts_and_tampering_is_reported(
    client: TestClient,
    accounts,
    container: Container,  # type: ignore[no-untyped-def]
) -> None:
    accounts.create("adm", "admin")
    admin = accounts.headers("adm")
    item = upload(client, admin, [to_bytes(make_ct())]).json()["files"][0]
    assert item["hash_registered"] is True

    records = client.get(f"/api/v1/blockchain/images/{item['image_id']}/hash", headers=admin).json()[
        "records"
    ]
    assert {r["kind"] for r in records} == {"dicom", "png", "thumbnail"}
    client.post("/api/v1/ledger/anchors", headers=admin)  # signs a checkpoint and anchors it
    key = client.get("/api/v1/ledger/public-key").json()["verifier_key"]
    receipt = client.get(f"/api/v1/ledger/receipts/{records[0]['object_id']}", headers=admin)
    assert receipt.status_code == 200
    verified = verify_receipt(receipt.json()["receipt"], key)  # offline: no server, no database
    assert verified.leaf_index == records[0]["log_index"]

    clean = client.post("/api/v1/ledger/verify", json={}, headers=admin).json()
    assert clean["ok"] is True, clean

    with container.sessions() as session:
        stored = session.get(StoredObject, records[0]["object_id"])
        assert stored is not None
        blob = bytearray(container.blobs.get(stored.storage_key))
    blob[40] ^= 0xFF
    container.blobs.put(stored.storage_key, bytes(blob))
    tampered = client.post("/api/v1/ledger/verify", json={}, headers=admin).json()
    assert tampered["ok"] is False
    kinds = {(m["kind"], m["object_id"]) for m in tampered["mismatches"]}
    assert ("blob_modified", stored.id) in kinds
