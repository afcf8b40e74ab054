"""AI analysis and reports through the HTTP API: providers, results, PDF/SR/FHIR, sign-off."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from irmsia.api.app import create_app
from irmsia.bootstrap import Container, build_container
from irmsia.db.ledger import LedgerEntry
from tests.conftest import Accounts, FakeClock, make_settings
from tests.factories import contains_phi, make_cr, make_ct, to_bytes

PATHOLOGY_WORDS = ("pneumonia", "nodule", "fracture", "effusion", "cancer", "tumour", "tumor", "mass")


@pytest.fixture
def world(tmp_path: Path, db_url: str, clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[dict]:  # type: ignore[type-arg]
    overrides = getattr(request, "param", {})
    settings = make_settings(tmp_path / "data", db_url, INGEST_EXECUTOR="inline", **overrides)
    container = build_container(settings, clock=clock)
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        accounts = Accounts(container, client)
        headers = {}
        for role in ("admin", "radiologist", "clinician", "auditor"):
            accounts.create(f"{role}7", role)
            headers[role] = accounts.headers(f"{role}7")
        files = [
            ("files", (f"{i}.dcm", to_bytes(blob), "application/dicom"))
            for i, blob in enumerate([make_ct(), make_ct()])
        ]
        uploaded = client.post("/api/v1/dicom/upload", files=files, headers=headers["admin"]).json()["files"]
        yield {"client": client, "headers": headers, "images": uploaded, "container": container}
    container.close()


@pytest.mark.parametrize("world", [{"AI_PROVIDER": "mock"}], indirect=True)
def test_mock_analysis_is_stored_labelled_audited_and_logged(world: dict) -> None:  # type: ignore[type-arg]
    client, headers, image = world["client"], world["headers"], world["images"][0]
    response = client.post(
        f"/api/v1/ai/analyze/{image['image_id']}",
        json={"additional_context": "routine"},
        headers=headers["clinician"],
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["status"] == "ok" and result["simulated"] is True and result["ai_generated"] is True
    assert result["provenance"]["provider"] == "mock"
    again = client.post(
        f"/api/v1/ai/analyze/{image['image_id']}",
        json={"additional_context": "routine"},
        headers=headers["clinician"],
    ).json()["result"]
    assert again["findings"] == result["findings"]  # deterministic for the same image and request
    by_study = client.get(
        f"/api/v1/ai/results/study/{image['study_id']}", headers=headers["radiologist"]
    ).json()
    assert len(by_study["items"]) == 2
    by_patient = client.get(
        f"/api/v1/ai/results/patient/{image['patient_pseudonym']}", headers=headers["clinician"]
    )
    assert len(by_patient.json()["items"]) == 2
    assert (
        client.get(f"/api/v1/ai/results/image/{image['image_id']}", headers=headers["auditor"]).status_code
        == 403
    )
    log = client.get("/api/v1/audit?action=ai.analyze", headers=headers["auditor"]).json()
    assert log["total"] == 2
    container: Container = world["container"]
    with container.sessions() as session:
        logged = session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "analysis")
        )
    assert logged == 2


def test_builtin_provider_measures_quality_and_claims_no_pathology(world: dict) -> None:  # type: ignore[type-arg]
    client, headers, image = world["client"], world["headers"], world["images"][0]
    result = client.post(f"/api/v1/ai/analyze/{image['image_id']}", headers=headers["radiologist"]).json()[
        "result"
    ]
    assert result["status"] == "ok"
    assert result["provenance"]["provider"] == "builtin" and result["simulated"] is False
    text = json.dumps(result).lower()
    assert not [word for word in PATHOLOGY_WORDS if word in text]
    assert result["findings"]


@pytest.mark.parametrize("world", [{"AI_PROVIDER": "mock"}], indirect=True)
def test_report_downloads_and_sign_off(world: dict) -> None:  # type: ignore[type-arg]
    client, headers = world["client"], world["headers"]
    image = world["images"][0]
    study = image["study_id"]
    assert (
        client.get(f"/api/v1/reports/{study}", headers=headers["clinician"]).status_code == 404
    )  # nothing analysed
    client.post(f"/api/v1/ai/analyze/{image['image_id']}", headers=headers["radiologist"])

    report = client.get(f"/api/v1/reports/{study}", headers=headers["clinician"]).json()
    assert report["status"] == "preliminary" and report["ledger_hash"] and report["ledger_index"] is not None
    pdf = client.get(f"/api/v1/reports/{study}/pdf", headers=headers["clinician"])
    assert (
        pdf.status_code == 200
        and pdf.content.startswith(b"%PDF")
        and pdf.headers["content-type"] == "application/pdf"
    )
    sr = client.get(f"/api/v1/reports/{study}/sr", headers=headers["clinician"])
    ds = pydicom.dcmread(io.BytesIO(sr.content))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.VerificationFlag == "UNVERIFIED"
    fhir = client.get(f"/api/v1/reports/{study}/fhir", headers=headers["clinician"]).json()
    assert fhir["resourceType"] == "Bundle"
    diagnostic = next(
        e["resource"] for e in fhir["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert diagnostic["status"] == "preliminary"
    for body in (pdf.content, sr.content, json.dumps(fhir).encode()):
        assert contains_phi(body) == []

    assert (
        client.post(
            f"/api/v1/reports/{study}/sign", json={"decision": "confirm"}, headers=headers["clinician"]
        ).status_code
        == 403
    )
    bad = client.post(
        f"/api/v1/reports/{study}/sign", json={"decision": "edit"}, headers=headers["radiologist"]
    )
    assert bad.status_code == 400
    signed = client.post(
        f"/api/v1/reports/{study}/sign",
        json={"decision": "edit", "narrative": "Reviewed: image quality adequate.", "comment": "ok"},
        headers=headers["radiologist"],
    )
    assert signed.status_code == 200, signed.text
    assert signed.json()["status"] == "final" and signed.json()["sign_off"]["username"] == "radiologist7"
    again = client.post(
        f"/api/v1/reports/{study}/sign", json={"decision": "confirm"}, headers=headers["radiologist"]
    )
    assert again.status_code == 409
    sr_final = pydicom.dcmread(
        io.BytesIO(client.get(f"/api/v1/reports/{study}/sr", headers=headers["clinician"]).content)
    )
    assert sr_final.VerificationFlag == "VERIFIED"
    log = client.get(
        f"/api/v1/audit?resource_id={study}&action=report.edited", headers=headers["auditor"]
    ).json()
    assert log["total"] == 1


@pytest.mark.parametrize(
    "world",
    [
        {
            "AI_PROVIDER": "openai",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "OPENAI_API_KEY": "sk-canary-secret",
            "AI_MAX_RETRIES": "0",
        }
    ],
    indirect=True,
)
def test_provider_down_gives_an_error_status_result_not_a_crash(world: dict) -> None:  # type: ignore[type-arg]
    client, headers, image = world["client"], world["headers"], world["images"][0]
    response = client.post(f"/api/v1/ai/analyze/{image['image_id']}", headers=headers["radiologist"])
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["status"] == "error" and result["error"]["code"]
    assert "sk-canary-secret" not in response.text


@pytest.mark.parametrize("world", [{"AI_PROVIDER": "mock", "AI_AUTO_ANALYZE": "true"}], indirect=True)
def test_auto_analysis_runs_after_ingest(world: dict) -> None:  # type: ignore[type-arg]
    client, headers = world["client"], world["headers"]
    files = [("files", ("cr.dcm", to_bytes(make_cr()), "application/dicom"))]
    item = client.post("/api/v1/dicom/upload", files=files, headers=headers["admin"]).json()["files"][0]
    assert item["status"] == "stored"
    results = client.get(f"/api/v1/ai/results/image/{item['image_id']}", headers=headers["clinician"]).json()
    assert len(results["items"]) == 1 and results["items"][0]["result"]["status"] == "ok"


def test_unknown_image_and_bad_body_are_clear_errors(world: dict) -> None:  # type: ignore[type-arg]
    client, headers = world["client"], world["headers"]
    assert client.post("/api/v1/ai/analyze/" + "0" * 32, headers=headers["radiologist"]).status_code == 404
    image = world["images"][0]["image_id"]
    bad = client.post(f"/api/v1/ai/analyze/{image}", json={"modality": 5}, headers=headers["radiologist"])
    assert bad.status_code == 422
    long = client.post(
        f"/api/v1/ai/analyze/{image}", json={"additional_context": "x" * 3000}, headers=headers["radiologist"]
    )
    assert long.status_code == 422
