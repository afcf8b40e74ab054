"""``GET /api/v1/audit``: the username and patient filters, resolved by the audit use case."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from irmsia.bootstrap import Container
from irmsia.usecases.ingest import IncomingFile
from tests.conftest import Accounts
from tests.factories import make_ct, to_bytes
from tests.support import CLI_CTX

pytestmark = pytest.mark.db


def _store(container: Container, patient_id: str) -> dict[str, str]:
    [item] = container.ingest.submit(
        CLI_CTX, [IncomingFile(data=[to_bytes(make_ct(patient_id=patient_id))], label="1")]
    ).files
    assert item.result["status"] == "stored"
    return item.result


def test_audit_search_by_username_keeps_the_actor_id(
    client: TestClient, accounts: Accounts, container: Container
) -> None:
    study = _store(container, "APIPID01")
    reader_id = accounts.create("reader", "clinician")
    accounts.create("watcher", "auditor")
    reader = accounts.headers("reader")
    assert client.get(f"/api/v1/studies/{study['study_id']}", headers=reader).status_code == 200
    auditor = accounts.headers("watcher")
    page = client.get("/api/v1/audit?username=READER", headers=auditor).json()
    assert {item["action"] for item in page["items"]} == {"auth.login", "study.read"}
    assert {item["actor_id"] for item in page["items"]} == {reader_id}
    assert page["total"] == 2
    assert client.get("/api/v1/audit?username=nobody", headers=auditor).json()["total"] == 0


def test_audit_search_by_patient_covers_its_studies_series_and_images(
    client: TestClient, accounts: Accounts, container: Container
) -> None:
    mine = _store(container, "APIPID01")
    other = _store(container, "APIPID02")
    accounts.create("reader", "radiologist")
    accounts.create("watcher", "auditor")
    reader = accounts.headers("reader")
    for path in (
        f"/api/v1/studies/{mine['study_id']}",
        f"/api/v1/series/{mine['series_id']}",
        f"/api/v1/images/{mine['image_id']}/dicom",
        f"/api/v1/studies/{other['study_id']}",
        f"/api/v1/ai/results/patient/{mine['patient_pseudonym']}",
    ):
        assert client.get(path, headers=reader).status_code == 200, path
    auditor = accounts.headers("watcher")
    page = client.get(f"/api/v1/audit?patient={mine['patient_pseudonym']}", headers=auditor).json()
    found = {(item["resource_type"], item["resource_id"]) for item in page["items"]}
    assert found == {
        ("study", mine["study_id"]),
        ("series", mine["series_id"]),
        ("image", mine["image_id"]),  # its ingest.store and the download
        ("patient", mine["patient_pseudonym"]),
    }
    downloads = client.get(
        f"/api/v1/audit?patient={mine['patient_pseudonym']}&action=image.download.dicom", headers=auditor
    ).json()
    assert [item["actor_name"] for item in downloads["items"]] == ["reader"]
    too_long = client.get("/api/v1/audit?patient=" + "x" * 65, headers=auditor)
    assert too_long.status_code == 422 and too_long.json()["error"] == "invalid_request"
