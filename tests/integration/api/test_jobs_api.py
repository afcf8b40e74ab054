"""Pipeline jobs through the REST API: admins list them, retry failed ones or discard their input."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from irmsia.bootstrap import Container
from irmsia.config import Settings
from irmsia.db.auditlog import AuditFilter
from irmsia.usecases.ingest import IncomingFile
from tests.conftest import count_rows, make_settings
from tests.factories import make_ct, to_bytes
from tests.support import CLI_CTX

pytestmark = pytest.mark.db


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    # Inline: a retried job has run by the time the request answers.
    return make_settings(tmp_path / "data", db_url, INGEST_EXECUTOR="inline")


def _ingest(container: Container, blob: bytes) -> str:
    """Queue one object through the spool (an upload with ``wait=false``); the inline executor
    runs it at once. Only spooled jobs keep their input when they fail."""
    [item] = container.ingest.submit(CLI_CTX, [IncomingFile(data=[blob], label="1")], wait=False).files
    assert item.job_id is not None
    return item.job_id


def _fail_store(container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store step fail as a broken disk would: not the input's fault."""

    def broken_store(state: object) -> None:
        raise ValueError("the disk is gone")

    monkeypatch.setattr(container.pipeline, "store", broken_store)


def test_admins_list_jobs_by_state_a_page_at_a_time(
    client: TestClient, container: Container, role_headers: dict[str, dict[str, str]]
) -> None:
    stored = [_ingest(container, to_bytes(make_ct())) for _ in range(3)]
    rejected = _ingest(container, b"not DICOM" * 30)
    admin = role_headers["admin"]
    page = client.get("/api/v1/jobs", headers=admin).json()
    assert page["total"] == 4 and {job["id"] for job in page["items"]} == {*stored, rejected}
    failed = client.get("/api/v1/jobs?state=failed", headers=admin).json()
    [job] = failed["items"]
    assert (job["id"], job["step"], job["error_code"], job["retryable"]) == (
        rejected,
        "validate",
        "not_dicom",
        False,
    )
    second = client.get("/api/v1/jobs?state=succeeded&offset=2&limit=2", headers=admin).json()
    assert (second["total"], len(second["items"]), second["offset"], second["limit"]) == (3, 1, 2, 2)
    bad = client.get("/api/v1/jobs?state=exploded", headers=admin)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
    assert client.get("/api/v1/jobs?limit=501", headers=admin).status_code == 422
    [listed] = container.audit.search(CLI_CTX, AuditFilter(action="job.list", username="admin1")).items[-1:]
    assert listed.as_dict()["detail"] == {"returned": 4}


def test_retrying_a_failed_job_runs_it_again(
    client: TestClient,
    container: Container,
    role_headers: dict[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fail_store(container, monkeypatch)
    job_id = _ingest(container, to_bytes(make_ct()))
    admin = role_headers["admin"]
    before = client.get(f"/api/v1/jobs/{job_id}", headers=admin).json()
    assert (before["state"], before["step"], before["retryable"]) == ("failed", "store", True)
    monkeypatch.undo()
    response = client.post(f"/api/v1/jobs/{job_id}/retry", headers=admin)
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["state"], job["step"], job["error_code"], job["retryable"]) == (
        "succeeded",
        None,
        None,
        False,
    )
    assert job["result"]["status"] == "stored" and count_rows(container, "instances") == 1
    again = client.post(f"/api/v1/jobs/{job_id}/retry", headers=admin)
    assert again.status_code == 409 and again.json() == {
        "error": "conflict",
        "detail": "the job is succeeded, not failed",
        "request_id": again.headers["x-request-id"],
    }
    outcomes = [e.outcome for e in container.audit.search(CLI_CTX, AuditFilter(action="job.retry")).items]
    assert outcomes == ["failure", "success"]


def test_discarding_a_failed_jobs_input_deletes_it(
    client: TestClient,
    container: Container,
    role_headers: dict[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fail_store(container, monkeypatch)
    job_id = _ingest(container, to_bytes(make_ct()))
    admin = role_headers["admin"]
    response = client.post(f"/api/v1/jobs/{job_id}/discard", headers=admin)
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["retryable"]) == ("failed", False)
    assert list(container.blobs.list("spool/")) == []
    assert client.post(f"/api/v1/jobs/{job_id}/discard", headers=admin).status_code == 409
    retry = client.post(f"/api/v1/jobs/{job_id}/retry", headers=admin)
    assert retry.status_code == 409 and "upload the file again" in retry.json()["detail"]
    [event] = container.audit.search(CLI_CTX, AuditFilter(action="job.discard", outcome="success")).items
    assert (event.resource_type, event.resource_id, event.actor_name) == ("job", job_id, "admin1")


def test_a_rejected_inputs_job_cannot_be_retried(
    client: TestClient, container: Container, role_headers: dict[str, dict[str, str]]
) -> None:
    job_id = _ingest(container, b"not DICOM" * 30)  # the input was at fault: deleted at once
    response = client.post(f"/api/v1/jobs/{job_id}/retry", headers=role_headers["admin"])
    assert response.status_code == 409 and "no longer kept" in response.json()["detail"]


def test_job_actions_on_unknown_jobs_are_404(
    client: TestClient, role_headers: dict[str, dict[str, str]]
) -> None:
    for action in ("retry", "discard"):
        response = client.post(f"/api/v1/jobs/0123/{action}", headers=role_headers["admin"])
        assert response.status_code == 404 and response.json()["error"] == "not_found"
