"""Sign-off edits through the REST API: diagnosis, findings removed or re-graded, one per report."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import sqlalchemy.exc
from fastapi.testclient import TestClient
from pypdf import PdfReader

from irmsia.api.app import create_app
from irmsia.bootstrap import Container, build_container
from irmsia.db.analysis import ReportSignoff
from tests.conftest import Accounts, FakeClock, make_settings
from tests.factories import make_ct, to_bytes
from tests.support import CLI_CTX

pytestmark = pytest.mark.db


@pytest.fixture
def world(tmp_path: Path, db_url: str, clock: FakeClock) -> Iterator[dict]:  # type: ignore[type-arg]
    settings = make_settings(tmp_path / "data", db_url, INGEST_EXECUTOR="inline")
    container = build_container(settings, clock=clock)
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        accounts = Accounts(container, client)
        headers = {}
        for role in ("radiologist", "clinician"):
            accounts.create(f"{role}8", role)
            headers[role] = accounts.headers(f"{role}8")
        files = [("files", ("1.dcm", to_bytes(make_ct()), "application/dicom"))]
        image = client.post("/api/v1/dicom/upload", files=files, headers=headers["radiologist"]).json()[
            "files"
        ][0]
        analysed = client.post(f"/api/v1/ai/analyze/{image['image_id']}", headers=headers["radiologist"])
        assert analysed.status_code == 200
        yield {"client": client, "headers": headers, "image": image, "container": container}
    container.close()


def _sign(world: dict, body: dict) -> object:  # type: ignore[type-arg]
    return world["client"].post(
        f"/api/v1/reports/{world['image']['study_id']}/sign",
        json=body,
        headers=world["headers"]["radiologist"],
    )


def test_an_edit_with_diagnosis_and_finding_changes_gives_the_signed_report(world: dict) -> None:  # type: ignore[type-arg]
    client, headers, study = world["client"], world["headers"], world["image"]["study_id"]
    before = client.get(f"/api/v1/reports/{study}", headers=headers["clinician"]).json()
    image = before["images"][0]
    findings = image["findings"]
    assert len(findings) >= 2
    regraded = "critical" if findings[1]["severity"] != "critical" else "low"
    signed = _sign(
        world,
        {
            "decision": "edit",
            "diagnosis": "Technically adequate CT",
            "findings": [
                {"image_id": image["image_id"], "index": 0, "remove": True},
                {"image_id": image["image_id"], "index": 1, "severity": regraded},
            ],
        },
    )
    assert signed.status_code == 200, signed.text  # type: ignore[attr-defined]
    body = signed.json()  # type: ignore[attr-defined]
    assert body["status"] == "final" and body["sign_off"]["action"] == "edited"
    assert body["sign_off"]["edited_diagnosis"] == "Technically adequate CT"
    assert body["sign_off"]["edited_narrative"] is None
    assert len(body["sign_off"]["amendments"]) == 2
    assert [f["description"] for f in body["images"][0]["findings"]] == [
        f["description"] for f in findings[1:]
    ]
    assert body["images"][0]["findings"][0]["severity"] == regraded
    assert body["ledger_hash"] != before["ledger_hash"]

    pdf = client.get(f"/api/v1/reports/{study}/pdf", headers=headers["clinician"]).content
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "Technically adequate CT" in text
    sr = pydicom.dcmread(
        io.BytesIO(client.get(f"/api/v1/reports/{study}/sr", headers=headers["clinician"]).content)
    )
    assert sr.VerificationFlag == "VERIFIED"
    fhir = client.get(f"/api/v1/reports/{study}/fhir", headers=headers["clinician"]).json()
    diagnostic = next(
        e["resource"] for e in fhir["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert "Clinician's diagnosis: Technically adequate CT" in diagnostic["conclusion"]

    # Analysing again does not change what was signed.
    client.post(
        f"/api/v1/ai/analyze/{world['image']['image_id']}",
        json={"provider": "mock"},
        headers=headers["radiologist"],
    )
    after = client.get(f"/api/v1/reports/{study}", headers=headers["clinician"]).json()
    assert after["ledger_hash"] == body["ledger_hash"] and after["images"] == body["images"]
    assert _sign(world, {"decision": "confirm"}).status_code == 409  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"decision": "edit"}, 400),
        ({"decision": "confirm", "diagnosis": "X"}, 400),
        ({"decision": "reject", "findings": [{"image_id": "x", "index": 0, "remove": True}]}, 400),
        ({"decision": "edit", "findings": [{"image_id": "x", "index": 0, "remove": True}]}, 400),
        ({"decision": "edit", "findings": [{"image_id": "IMAGE", "index": 99, "remove": True}]}, 400),
        (
            {
                "decision": "edit",
                "findings": [{"image_id": "IMAGE", "index": 0, "severity": "low", "remove": True}],
            },
            422,
        ),
        ({"decision": "edit", "findings": [{"image_id": "IMAGE", "index": 0}]}, 422),
        ({"decision": "edit", "findings": [{"image_id": "IMAGE", "index": 0, "severity": "grave"}]}, 422),
        ({"decision": "edit", "diagnosis": "d" * 201}, 422),
        ({"decision": "edit", "narrative": "n" * 10_001}, 422),
        ({"decision": "confirm", "comment": "   "}, 200),
    ],
)
def test_malformed_sign_offs_are_clear_errors(world: dict, body: dict, status: int) -> None:  # type: ignore[type-arg]
    text = json.dumps(body).replace("IMAGE", world["image"]["image_id"])
    response = _sign(world, json.loads(text))
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    if status == 200:
        assert response.json()["sign_off"]["comment"] is None  # type: ignore[attr-defined]


def test_the_database_keeps_one_sign_off_per_study(world: dict) -> None:  # type: ignore[type-arg]
    container: Container = world["container"]
    container.reports.sign(CLI_CTX, world["image"]["study_id"], "confirm")
    with container.sessions() as session, pytest.raises(sqlalchemy.exc.IntegrityError):
        session.add(
            ReportSignoff(
                study_id=world["image"]["study_id"],
                decision="rejected",
                signer_id="x",
                signer_name="x",
                analyses_sha256="0" * 64,
                created_at=container.clock(),
            )
        )
        session.flush()


def test_studies_filter_and_sort_on_the_ai_summary(world: dict) -> None:  # type: ignore[type-arg]
    client, headers, study = world["client"], world["headers"], world["image"]["study_id"]
    files = [("files", ("2.dcm", to_bytes(make_ct()), "application/dicom"))]
    other = client.post("/api/v1/dicom/upload", files=files, headers=headers["radiologist"]).json()["files"][
        0
    ]

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/v1/studies?{query}", headers=headers["clinician"])
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids("ai_status=analysed") == [study]
    assert ids("ai_status=not_analysed") == [other["study_id"]]
    assert ids("sort=risk")[0] == study
    assert ids("min_risk=0") == [study]
    _sign(world, {"decision": "confirm"})
    assert ids("ai_status=signed") == [study] and ids("ai_status=analysed") == []
    for bad in ("ai_status=great", "min_risk=101", "sort=size"):
        assert client.get(f"/api/v1/studies?{bad}", headers=headers["clinician"]).status_code == 422
