"""Nobody writes to the ledger through the API.

The ledger's routes read, except two actions: ``POST /api/v1/ledger/anchors`` (admins: sign a
checkpoint and publish it) and ``POST /api/v1/ledger/verify`` (admins, auditors: re-check).
Neither takes entry data; the only entries either adds to the log are its own audit records.
"""

from __future__ import annotations

import base64
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from irmsia.api.middleware import REQUEST_ID_HEADER
from irmsia.bootstrap import Container
from irmsia.ledger.entries import AUDIT, parse_entry
from irmsia.ledger.service import Ledger
from tests.integration.api.test_role_matrix import _served_routes
from tests.integration.ledger.conftest import Images, StoredStudy

pytestmark = pytest.mark.db

ACTIONS = {("POST", "/api/v1/ledger/anchors"), ("POST", "/api/v1/ledger/verify")}
CANARY = "forged-entry-canary"


@pytest.fixture
def study(images: Images) -> StoredStudy:
    return images.add_study(instances=2)


def _size(container: Container, ledger: Ledger) -> int:
    with container.sessions() as session:
        return ledger.size(session)


def _entries_since(container: Container, ledger: Ledger, start: int) -> list[tuple[str, bytes]]:
    with container.sessions() as session:
        return [
            (record.kind, record.data)
            for record in (ledger.entry(session, i) for i in range(start, ledger.size(session)))
        ]


def test_ledger_routes_read_except_anchor_and_verify(app: FastAPI) -> None:
    ledger_routes = {
        (method, path)
        for method, path in _served_routes(app)
        if path.startswith(("/api/v1/ledger", "/api/v1/blockchain"))
    }
    assert {route for route in ledger_routes if route[0] != "GET"} == ACTIONS


@pytest.mark.parametrize(
    ("path", "body", "action", "role"),
    [
        (
            "/api/v1/ledger/anchors",
            {"entry": base64.b64encode(CANARY.encode()).decode(), "data": CANARY},
            "ledger.anchor",
            "admin",
        ),
        ("/api/v1/ledger/verify", {}, "ledger.verify", "auditor"),
        ("/api/v1/ledger/verify", None, "ledger.verify", "admin"),
    ],
)
def test_anchor_and_verify_append_only_their_own_audit_record(
    path: str,
    body: dict[str, str] | None,
    action: str,
    role: str,
    client: TestClient,
    container: Container,
    ledger: Ledger,
    study: StoredStudy,
    role_headers: dict[str, dict[str, str]],
) -> None:
    before = _size(container, ledger)

    response = client.post(path, json=body, headers=role_headers[role])

    assert response.status_code == 200, response.text
    added = _entries_since(container, ledger, before)
    assert [kind for kind, _ in added] == [AUDIT]
    event = parse_entry(added[0][1])
    assert event is not None
    assert event["action"] == action
    assert event["request_id"] == response.headers[REQUEST_ID_HEADER]
    assert CANARY not in added[0][1].decode()


def test_verify_refuses_fields_it_does_not_know(
    client: TestClient,
    container: Container,
    ledger: Ledger,
    study: StoredStudy,
    role_headers: dict[str, dict[str, str]],
) -> None:
    before = _size(container, ledger)
    response = client.post("/api/v1/ledger/verify", json={"entry": CANARY}, headers=role_headers["admin"])
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert _size(container, ledger) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/ledger/entries"),
        ("POST", "/api/v1/ledger"),
        ("PUT", "/api/v1/ledger/checkpoint"),
        ("POST", "/api/v1/ledger/checkpoints"),
        ("POST", "/api/v1/ledger/receipts/{object_id}"),
        ("DELETE", "/api/v1/ledger/anchors"),
        ("POST", "/api/v1/blockchain/images/{image_id}/hash"),
        ("PUT", "/api/v1/blockchain/images/{image_id}/access-logs"),
    ],
)
def test_there_is_no_route_that_writes_entries(
    method: str,
    path: str,
    client: TestClient,
    container: Container,
    ledger: Ledger,
    study: StoredStudy,
    role_headers: dict[str, dict[str, str]],
) -> None:
    concrete = path.replace("{object_id}", study.object_ids[0]).replace("{image_id}", study.instance_ids[0])
    before = _size(container, ledger)
    response = client.request(
        method, concrete, content=json.dumps({"data": CANARY}), headers=role_headers["admin"]
    )
    assert response.status_code in (404, 405), response.text
    assert _size(container, ledger) == before
