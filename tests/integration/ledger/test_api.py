"""The ledger over HTTP: who may call what, proofs that verify, receipts checked offline."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from irmsia.bootstrap import Container
from irmsia.db.engine import transaction
from irmsia.ledger.verifier import (
    NoteVerifier,
    leaf_hash,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
    verify_receipt,
)
from irmsia.usecases.ledger import LedgerServices
from tests.integration.ledger.conftest import ORIGIN, Images, StoredStudy
from tests.support import CLI_CTX

ROLES = ("admin", "radiologist", "clinician", "uploader", "auditor")
READERS = {"admin", "auditor"}

READ_ENDPOINTS = [
    "/api/v1/ledger/checkpoint",
    "/api/v1/ledger/checkpoints",
    "/api/v1/ledger/proof/inclusion?index=0",
    "/api/v1/ledger/proof/consistency?first=1",
    "/api/v1/ledger/receipts/{object_id}",
    "/api/v1/ledger/anchors",
    "/api/v1/ledger/verification",
    "/api/v1/blockchain/images/{image_id}/hash",
    "/api/v1/blockchain/images/{image_id}/access-logs",
]


@pytest.fixture
def study(images: Images, role_headers: dict[str, dict[str, str]]) -> StoredStudy:
    return images.add_study(instances=2)


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def _path(template: str, study: StoredStudy) -> str:
    return template.replace("{object_id}", study.object_ids[0]).replace("{image_id}", study.instance_ids[0])


@pytest.mark.parametrize("template", READ_ENDPOINTS)
def test_only_admins_and_auditors_read_the_ledger(
    template: str,
    client: TestClient,
    study: StoredStudy,
    role_headers: dict[str, dict[str, str]],
    services: LedgerServices,
) -> None:
    services.verification.run(CLI_CTX)  # so that a last result exists
    path = _path(template, study)
    for role in ROLES:
        response = client.get(path, headers=role_headers[role])
        if role in READERS:
            assert response.status_code == 200, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.status_code)
            assert response.json()["error"] == "forbidden"
    assert client.get(path).status_code == 401


def test_only_admins_publish_anchors_and_admins_and_auditors_verify(
    client: TestClient, study: StoredStudy, role_headers: dict[str, dict[str, str]]
) -> None:
    for role in ROLES:
        anchored = client.post("/api/v1/ledger/anchors", headers=role_headers[role])
        assert anchored.status_code == (200 if role == "admin" else 403), (role, anchored.text)
        verified = client.post("/api/v1/ledger/verify", headers=role_headers[role])
        assert verified.status_code == (200 if role in READERS else 403), (role, verified.text)
    assert client.post("/api/v1/ledger/anchors").status_code == 401
    assert client.post("/api/v1/ledger/verify").status_code == 401


def test_public_key_is_public_and_verifies_checkpoints(
    client: TestClient, study: StoredStudy, role_headers: dict[str, dict[str, str]]
) -> None:
    key = client.get("/api/v1/ledger/public-key")
    assert key.status_code == 200
    assert key.json()["origin"] == ORIGIN
    verifier = NoteVerifier.from_string(key.json()["verifier_key"])
    checkpoint = client.get("/api/v1/ledger/checkpoint", headers=role_headers["auditor"]).json()
    parsed = verify_checkpoint(checkpoint["note"], verifier, origin=ORIGIN)
    assert (parsed.size, base64.b64encode(parsed.root_hash).decode()) == (
        checkpoint["size"],
        checkpoint["root_hash"],
    )


def test_receipt_from_the_api_verifies_offline(
    client: TestClient, study: StoredStudy, role_headers: dict[str, dict[str, str]]
) -> None:
    key = client.get("/api/v1/ledger/public-key").json()["verifier_key"]
    body = client.get(
        f"/api/v1/ledger/receipts/{study.object_ids[1]}", headers=role_headers["auditor"]
    ).json()
    verified = verify_receipt(body["receipt"], key, origin=ORIGIN)
    assert verified.leaf_index == body["index"]
    assert b'"object_id":"%s"' % study.object_ids[1].encode() in verified.entry
    missing = client.get("/api/v1/ledger/receipts/" + "0" * 32, headers=role_headers["auditor"])
    assert missing.status_code == 404


def test_inclusion_and_consistency_proofs_from_the_api_verify(
    client: TestClient, images: Images, study: StoredStudy, role_headers: dict[str, dict[str, str]]
) -> None:
    headers = role_headers["admin"]
    first = client.post("/api/v1/ledger/anchors", headers=headers).json()[0]["checkpoint_size"]
    images.add_study(instances=3)
    second = client.post("/api/v1/ledger/anchors", headers=headers).json()[0]["checkpoint_size"]
    assert second > first
    proof = client.get(f"/api/v1/ledger/proof/inclusion?index=2&size={second}", headers=headers).json()
    assert proof["checkpoint"] is not None
    verify_inclusion(
        leaf_hash(_b(proof["entry"])), 2, second, [_b(p) for p in proof["proof"]], _b(proof["root_hash"])
    )
    consistency = client.get(
        f"/api/v1/ledger/proof/consistency?first={first}&second={second}", headers=headers
    ).json()
    verify_consistency(
        first,
        second,
        [_b(p) for p in consistency["proof"]],
        _b(consistency["first_root"]),
        _b(consistency["second_root"]),
    )


@pytest.mark.parametrize(
    "query",
    ["index=5&size=3", "index=0&size=100000", "index=-1", "first=0", "first=5&second=2"],
)
def test_impossible_proof_requests_are_bad_requests(
    query: str, client: TestClient, study: StoredStudy, role_headers: dict[str, dict[str, str]]
) -> None:
    kind = "inclusion" if query.startswith("index") else "consistency"
    response = client.get(f"/api/v1/ledger/proof/{kind}?{query}", headers=role_headers["auditor"])
    assert response.status_code in (400, 422)
    assert response.json()["error"] == "invalid_request"


def test_image_hash_records_come_from_the_log(
    client: TestClient, study: StoredStudy, role_headers: dict[str, dict[str, str]], container: Container
) -> None:
    body = client.get(
        f"/api/v1/blockchain/images/{study.instance_ids[0]}/hash", headers=role_headers["auditor"]
    ).json()
    assert body["image_id"] == study.instance_ids[0]
    (record,) = body["records"]
    assert record["object_id"] == study.object_ids[0]
    assert record["kind"] == "dicom" and len(record["sha256"]) == 64
    receipt = client.get(f"/api/v1/ledger/receipts/{study.object_ids[0]}", headers=role_headers["auditor"])
    assert record["log_index"] == receipt.json()["index"]
    unknown = client.get("/api/v1/blockchain/images/" + "0" * 32 + "/hash", headers=role_headers["auditor"])
    assert unknown.status_code == 404


def test_image_access_log_lists_audit_records_about_that_image(
    client: TestClient, study: StoredStudy, role_headers: dict[str, dict[str, str]], container: Container
) -> None:
    image = study.instance_ids[1]
    with transaction(container.sessions) as session:
        container.audit.record(session, CLI_CTX, "image.read", resource_type="image", resource_id=image)
    body = client.get(
        f"/api/v1/blockchain/images/{image}/access-logs", headers=role_headers["auditor"]
    ).json()
    assert [(e["event"]["action"], e["event"]["resource_id"]) for e in body["events"]] == [
        ("image.read", image)
    ]
    assert isinstance(body["events"][0]["log_index"], int)
    # Reading the ledger is audited, but not as an access to the image itself.
    again = client.get(
        f"/api/v1/blockchain/images/{image}/access-logs", headers=role_headers["auditor"]
    ).json()
    assert len(again["events"]) == 1


def test_every_ledger_read_is_audited(
    client: TestClient, study: StoredStudy, role_headers: dict[str, dict[str, str]]
) -> None:
    headers = role_headers["auditor"]
    client.get("/api/v1/ledger/checkpoints", headers=headers)
    client.get(f"/api/v1/ledger/receipts/{study.object_ids[0]}", headers=headers)
    page = client.get("/api/v1/audit?action=ledger.read", headers=headers).json()
    views = sorted(item["detail"]["view"] for item in page["items"])
    assert views == ["checkpoints", "receipt"]
    assert all(item["actor_role"] == "auditor" for item in page["items"])


def test_verify_endpoint_reports_tampering_and_stores_the_result(
    client: TestClient, images: Images, study: StoredStudy, role_headers: dict[str, dict[str, str]]
) -> None:
    images.blob_path(study.object_ids[0]).unlink()
    result = client.post(
        "/api/v1/ledger/verify", json={"study_id": study.study_id}, headers=role_headers["auditor"]
    )
    assert result.status_code == 200
    body = result.json()
    assert body["ok"] is False and body["scope"] == f"study:{study.study_id}"
    assert [(m["kind"], m["object_id"]) for m in body["mismatches"]] == [
        ("blob_missing", study.object_ids[0])
    ]
    last = client.get("/api/v1/ledger/verification", headers=role_headers["admin"]).json()
    assert last["id"] == body["id"] and last["summary"] == {"blob_missing": 1}
    bad = client.post(
        "/api/v1/ledger/verify", json={"sample": 2, "all": True}, headers=role_headers["auditor"]
    )
    assert bad.status_code == 422


def test_anchor_publications_are_listed(
    client: TestClient, study: StoredStudy, role_headers: dict[str, dict[str, str]]
) -> None:
    published = client.post("/api/v1/ledger/anchors", headers=role_headers["admin"]).json()
    assert [(a["kind"], a["status"]) for a in published] == [("mock", "anchored")]
    listed = client.get("/api/v1/ledger/anchors", headers=role_headers["auditor"]).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == published[0]["id"]
    assert listed["items"][0]["reference"] == "mock:0"


def test_no_verification_yet_is_not_found(
    client: TestClient, role_headers: dict[str, dict[str, str]]
) -> None:
    response = client.get("/api/v1/ledger/verification", headers=role_headers["auditor"])
    assert response.status_code == 404
