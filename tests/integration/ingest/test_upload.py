"""Upload through HTTP: stored, de-identified, converted, encrypted, indexed; bad files rejected."""

from __future__ import annotations

import io
import zipfile

from fastapi.testclient import TestClient

from irmsia.bootstrap import Container
from tests.conftest import count_rows
from tests.factories import PHI, make_cr, make_ct, make_multiframe_us, to_bytes
from tests.integration.ingest.conftest import upload


def test_upload_stores_one_ct_slice(
    client: TestClient, uploader: dict[str, str], container: Container
) -> None:
    response = upload(client, uploader, [to_bytes(make_ct())])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"]["stored"] == 1
    item = body["files"][0]
    assert item["status"] == "stored"
    assert item["deidentified"] and item["converted"] and item["encrypted"]
    assert item["image_id"] and item["study_id"] and item["series_id"]
    assert item["patient_pseudonym"].startswith("IRM")
    assert item["frames"] == 1
    assert count_rows(container, "instances") == 1
    assert count_rows(container, "stored_objects") == 3  # dicom, png, thumbnail
    assert count_rows(container, "jobs") == 1


def test_same_instance_twice_is_reported_as_duplicate(
    client: TestClient, uploader: dict[str, str], container: Container
) -> None:
    blob = to_bytes(make_ct())
    first = upload(client, uploader, [blob]).json()["files"][0]
    second = upload(client, uploader, [blob]).json()["files"][0]
    assert second["status"] == "duplicate"
    assert second["image_id"] == first["image_id"]
    assert count_rows(container, "instances") == 1
    assert count_rows(container, "stored_objects") == 3
    assert sum(1 for _ in container.blobs.list("objects/")) == 1  # DICOM, PNG and thumbnail in one blob


def test_one_bad_file_never_fails_the_others(client: TestClient, uploader: dict[str, str]) -> None:
    response = upload(client, uploader, [to_bytes(make_ct()), b"not dicom at all" * 10, to_bytes(make_cr())])
    assert response.status_code == 200
    statuses = [f["status"] for f in response.json()["files"]]
    assert statuses == ["stored", "rejected", "stored"]
    rejected = response.json()["files"][1]
    assert rejected["error"] and rejected["message"]


def test_single_bad_file_is_a_422_with_a_reason(client: TestClient, uploader: dict[str, str]) -> None:
    response = upload(client, uploader, [b"\x00" * 300])
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_dicom"


def test_zip_archive_members_are_ingested(client: TestClient, uploader: dict[str, str]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{PHI['PatientName']}/a.dcm", to_bytes(make_ct()))
        archive.writestr("folder/", b"")
        archive.writestr("b.dcm", to_bytes(make_ct()))
    response = upload(client, uploader, [buffer.getvalue()], names=["study.zip"])
    assert response.status_code == 200, response.text
    files = response.json()["files"]
    assert [f["file"] for f in files] == ["1/1", "1/2"]
    assert all(f["status"] == "stored" for f in files)
    assert "Canaryname" not in response.text


def test_multiframe_gives_one_png_per_frame(
    client: TestClient,
    accounts,
    container: Container,  # type: ignore[no-untyped-def]
) -> None:
    accounts.create("rad", "radiologist")
    ds = make_multiframe_us(frames=3)
    ds.BurnedInAnnotation = "NO"
    item = upload(client, accounts.headers("rad"), [to_bytes(ds)]).json()["files"][0]
    assert item["status"] == "stored" and item["frames"] == 3
    assert count_rows(container, "stored_objects") == 5  # dicom, 3 png, thumbnail


def test_ultrasound_without_burned_in_flag_is_rejected_by_default(
    client: TestClient, uploader: dict[str, str]
) -> None:
    response = upload(client, uploader, [to_bytes(make_multiframe_us())])
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_dicom"
    assert "burned-in" in response.json()["detail"]


def test_wait_false_answers_202_with_job_ids(client: TestClient, uploader: dict[str, str]) -> None:
    response = upload(client, uploader, [to_bytes(make_ct())], wait=False)
    assert response.status_code == 202
    job_id = response.json()["files"][0]["job_id"]
    job = client.get(f"/api/v1/jobs/{job_id}", headers=uploader)
    assert job.status_code == 200
    assert job.json()["state"] == "succeeded"  # the inline executor ran it already
    assert set(job.json()["timings_ms"]) >= {"validate", "deidentify", "render", "store", "index"}


def test_uploader_cannot_see_other_uploaders_jobs(
    client: TestClient, accounts, uploader: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    job_id = upload(client, uploader, [to_bytes(make_ct())], wait=False).json()["files"][0]["job_id"]
    accounts.create("modality2", "uploader")
    assert client.get(f"/api/v1/jobs/{job_id}", headers=accounts.headers("modality2")).status_code == 404


def test_clinician_may_not_upload(client: TestClient, accounts) -> None:  # type: ignore[no-untyped-def]
    accounts.create("doc", "clinician")
    assert upload(client, accounts.headers("doc"), [to_bytes(make_ct())]).status_code == 403


def test_not_multipart_is_a_415(client: TestClient, uploader: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/dicom/upload",
        content=to_bytes(make_ct()),
        headers={**uploader, "Content-Type": "application/dicom"},
    )
    assert response.status_code == 415


def test_validation_policy_can_be_chosen_per_upload(client: TestClient, uploader: dict[str, str]) -> None:
    ds = make_ct()
    ds.SOPInstanceUID = "1.2.3.04"  # a leading zero in a UID component: invalid syntax
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    blob = to_bytes(ds)
    strict = upload(client, uploader, [blob])
    assert strict.status_code == 422
    files = [("files", ("x.dcm", blob, "application/dicom"))]
    lenient = client.post("/api/v1/dicom/upload?validation=lenient", files=files, headers=uploader)
    assert lenient.status_code == 200 and lenient.json()["files"][0]["status"] == "stored"
    bad = client.post("/api/v1/dicom/upload?validation=sloppy", files=files, headers=uploader)
    assert bad.status_code == 422
