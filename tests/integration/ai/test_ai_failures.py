"""AI failures through the HTTP API: non-image objects, failing providers after ingest, audited reads.

Automatic analysis (AI_AUTO_ANALYZE) is a step after the image is indexed: whatever the provider
does, the image stays stored, and the job's result says how the analysis went.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from irmsia.api.app import create_app
from irmsia.bootstrap import build_container
from tests.conftest import Accounts, FakeClock, make_settings
from tests.factories import PHI, EnhancedSRStorage, make_cr, to_bytes
from tests.unit.ai.builders import chat_server

pytestmark = pytest.mark.db


def make_sr() -> Dataset:
    """A small Enhanced SR (no pixel data) with planted identity, as a PACS would send one."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedSRStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = EnhancedSRStorage
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = PHI["PatientName"]
    ds.PatientID = PHI["PatientID"]
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = "no acute findings"
    ds.ContentSequence = Sequence([item])
    return ds


class World:
    def __init__(self, client: TestClient, headers: dict[str, dict[str, str]]) -> None:
        self.client = client
        self.headers = headers

    def upload(self, ds: Dataset) -> dict[str, Any]:
        files = [("files", ("1.dcm", to_bytes(ds), "application/dicom"))]
        response = self.client.post("/api/v1/dicom/upload", files=files, headers=self.headers["admin"])
        assert response.status_code == 200, response.text
        [item] = response.json()["files"]
        return dict(item)

    def job_result(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/jobs/{job_id}", headers=self.headers["admin"])
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["state"] == "succeeded", job  # the ingest never fails because of the analysis
        return dict(job["result"])

    def results(self, image_id: str) -> list[dict[str, Any]]:
        response = self.client.get(
            f"/api/v1/ai/results/image/{image_id}", headers=self.headers["radiologist"]
        )
        assert response.status_code == 200, response.text
        return [item["result"] for item in response.json()["items"]]

    def audit(self, action: str, resource_id: str) -> list[dict[str, Any]]:
        response = self.client.get(
            "/api/v1/audit",
            params={"action": action, "resource_id": resource_id},
            headers=self.headers["auditor"],
        )
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


@pytest.fixture
def make_world(tmp_path: Path, db_url: str, clock: FakeClock) -> Iterator[Any]:
    built = []

    def make(**overrides: str) -> World:
        settings = make_settings(tmp_path / "data", db_url, INGEST_EXECUTOR="inline", **overrides)
        container = build_container(settings, clock=clock)
        client = TestClient(create_app(container=container), raise_server_exceptions=False)
        client.__enter__()
        built.append((container, client))
        accounts = Accounts(container, client)
        headers = {}
        for role in ("admin", "radiologist", "clinician", "auditor"):
            accounts.create(f"{role}8", role)
            headers[role] = accounts.headers(f"{role}8")
        return World(client, headers)

    yield make
    for container, client in built:
        client.__exit__(None, None, None)
        container.close()


# --- automatic analysis never fails the ingest ---------------------------------------------------


def _broken_card(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    card = directory / "card.json"
    card.write_text('{"name": "broken", "version": "1", "model": "missing.onnx"', encoding="utf-8")
    return card


def test_auto_analysis_with_an_ai_service_answering_500_stores_the_image_and_an_error_result(
    make_world: Any,
) -> None:
    with chat_server() as server:
        server.mode = "500"
        world = make_world(
            AI_AUTO_ANALYZE="true",
            AI_PROVIDER="openai",
            OPENAI_BASE_URL=server.url,
            OPENAI_API_KEY="sk-canary-auto-analysis",
            AI_MAX_RETRIES="0",
        )
        item = world.upload(make_cr())

        assert item["status"] == "stored" and item["image_id"]
        assert server.requests  # the analysis really ran against the service
        [result] = world.results(item["image_id"])
        assert result["status"] == "error" and result["error"]["code"] == "external_service_error"
        assert world.job_result(item["job_id"])["status"] == "stored"
        download = world.client.get(
            f"/api/v1/images/{item['image_id']}/dicom", headers=world.headers["admin"]
        )
        assert download.status_code == 200 and b"DICM" in download.content[:200]
        assert "sk-canary-auto-analysis" not in json.dumps(result)


def test_auto_analysis_with_a_broken_model_card_stores_the_image_and_an_error_result(
    make_world: Any, tmp_path: Path
) -> None:
    world = make_world(
        AI_AUTO_ANALYZE="true", AI_PROVIDER="onnx", AI_ONNX_MODEL_CARD=str(_broken_card(tmp_path / "weights"))
    )

    item = world.upload(make_cr())

    assert item["status"] == "stored"
    [result] = world.results(item["image_id"])
    assert result["status"] == "error" and result["error"]["code"] == "provider_unavailable"
    assert "JSON" in result["error"]["message"]  # says what is wrong with the card, not where it is
    assert str(tmp_path) not in json.dumps(result)
    assert world.job_result(item["job_id"])["status"] == "stored"


def test_the_job_result_records_the_analysis_error_code(make_world: Any, tmp_path: Path) -> None:
    world = make_world(
        AI_AUTO_ANALYZE="true", AI_PROVIDER="onnx", AI_ONNX_MODEL_CARD=str(_broken_card(tmp_path / "weights"))
    )

    item = world.upload(make_cr())

    assert world.job_result(item["job_id"]).get("analysis") == "provider_unavailable"


def test_auto_analysis_of_a_structured_report_records_why_and_keeps_it_stored(make_world: Any) -> None:
    world = make_world(AI_AUTO_ANALYZE="true", AI_PROVIDER="mock")

    item = world.upload(make_sr())

    assert item["status"] == "stored" and item["image_id"]
    result = world.job_result(item["job_id"])
    assert result["status"] == "stored" and result["analysis"] == "not_an_image"
    assert world.results(item["image_id"]) == []  # nothing made up for an object without pixels


def test_auto_analysis_of_an_image_that_succeeds_is_recorded_as_done(make_world: Any) -> None:
    world = make_world(AI_AUTO_ANALYZE="true", AI_PROVIDER="mock")

    item = world.upload(make_cr())

    assert world.job_result(item["job_id"])["analysis"] == "done"
    [result] = world.results(item["image_id"])
    assert result["status"] == "ok"


# --- analysing a stored non-image object -------------------------------------------------------


def test_analysing_a_stored_structured_report_is_a_clear_422(make_world: Any) -> None:
    world = make_world(AI_PROVIDER="mock")
    item = world.upload(make_sr())
    assert item["status"] == "stored"

    response = world.client.post(
        f"/api/v1/ai/analyze/{item['image_id']}", json={}, headers=world.headers["radiologist"]
    )

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_dicom"
    assert "not an image" in body["detail"]
    assert world.results(item["image_id"]) == []
    assert world.audit("ai.analyze", item["image_id"]) == []  # nothing was analysed


# --- reads of AI results and reports are audited ------------------------------------------------


def test_reading_ai_results_is_audited_per_resource(make_world: Any) -> None:
    world = make_world(AI_PROVIDER="mock")
    item = world.upload(make_cr())
    world.client.post(f"/api/v1/ai/analyze/{item['image_id']}", headers=world.headers["radiologist"])
    reads = {
        "image": f"/api/v1/ai/results/image/{item['image_id']}",
        "study": f"/api/v1/ai/results/study/{item['study_id']}",
        "patient": f"/api/v1/ai/results/patient/{item['patient_pseudonym']}",
    }
    keys = {"image": item["image_id"], "study": item["study_id"], "patient": item["patient_pseudonym"]}

    for kind, url in reads.items():
        assert world.audit("ai.read", keys[kind]) == []
        assert world.client.get(url, headers=world.headers["clinician"]).status_code == 200
        [record] = world.audit("ai.read", keys[kind])
        assert record["resource_type"] == kind
        assert record["actor_name"] == "clinician8"
        assert record["outcome"] == "success"


def test_reading_a_report_is_audited_with_its_format(make_world: Any) -> None:
    world = make_world(AI_PROVIDER="mock")
    item = world.upload(make_cr())
    study = item["study_id"]
    world.client.post(f"/api/v1/ai/analyze/{item['image_id']}", headers=world.headers["radiologist"])
    assert world.audit("report.read", study) == []

    for path in ("", "/pdf", "/sr", "/fhir"):
        assert (
            world.client.get(f"/api/v1/reports/{study}{path}", headers=world.headers["clinician"]).status_code
            == 200
        )

    records = world.audit("report.read", study)
    assert len(records) == 4
    assert {r["detail"]["format"] for r in records} == {"json", "pdf", "sr", "fhir"}
    assert {r["actor_name"] for r in records} == {"clinician8"}
    assert {r["resource_type"] for r in records} == {"study"}
