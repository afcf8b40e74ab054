"""Browse, download (decrypted on the fly), re-identify, quarantine, rotate keys, crypto-shred."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from irmsia.bootstrap import Container, build_container
from irmsia.config import Settings
from irmsia.domain.png import decode_png
from tests.conftest import Accounts, FakeClock, count_rows, make_settings
from tests.factories import PHI, make_cr, make_ct, make_secondary_capture, to_bytes
from tests.integration.ingest.conftest import upload


@pytest.fixture
def staff(accounts: Accounts) -> dict[str, dict[str, str]]:
    out = {}
    for role in ("admin", "radiologist", "clinician", "auditor", "uploader"):
        accounts.create(f"{role}9", role)
        out[role] = accounts.headers(f"{role}9")
    return out


def _ingest(client: TestClient, headers: dict[str, str], *blobs: bytes) -> list[dict[str, object]]:
    response = upload(client, headers, list(blobs))
    assert response.status_code == 200, response.text
    return response.json()["files"]


def test_worklist_by_patient_and_by_date(client: TestClient, staff: dict[str, dict[str, str]]) -> None:
    _ct, cr = _ingest(client, staff["uploader"], to_bytes(make_ct()), to_bytes(make_cr()))
    doc = staff["clinician"]
    patients = client.get("/api/v1/patients", headers=doc).json()
    assert patients["total"] == 1 and patients["items"][0]["studies"] == 2
    pseudonym = patients["items"][0]["pseudonym"]
    studies = client.get(f"/api/v1/studies?patient={pseudonym}", headers=doc).json()
    assert studies["total"] == 2
    dates = {s["study_date"] for s in studies["items"]}
    assert len(dates) == 1 and "2024-01-05" not in dates  # shifted, consistently
    shifted = dates.pop()
    assert (
        client.get(f"/api/v1/studies?date_from={shifted}&date_to={shifted}", headers=doc).json()["total"] == 2
    )
    assert client.get("/api/v1/studies?date_from=2030-01-01", headers=doc).json()["total"] == 0
    only_cr = client.get("/api/v1/studies?modality=CR", headers=doc).json()
    assert [s["id"] for s in only_cr["items"]] == [cr["study_id"]]
    page = client.get("/api/v1/studies?limit=1&offset=1", headers=doc).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    bad = client.get("/api/v1/studies?date_from=2024-02-01&date_to=2024-01-01", headers=doc)
    assert bad.status_code == 400


def test_study_series_image_and_downloads(client: TestClient, staff: dict[str, dict[str, str]]) -> None:
    (item,) = _ingest(client, staff["uploader"], to_bytes(make_ct(rows=32, columns=48)))
    doc = staff["radiologist"]
    study = client.get(f"/api/v1/studies/{item['study_id']}", headers=doc).json()
    assert study["modalities"] == ["CT"] and len(study["series"]) == 1
    series = client.get(f"/api/v1/series/{study['series'][0]['id']}", headers=doc).json()
    assert [i["id"] for i in series["instances"]] == [item["image_id"]]
    image = client.get(f"/api/v1/images/{item['image_id']}", headers=doc).json()
    assert {o["kind"] for o in image["objects"]} == {"dicom", "png", "thumbnail"}

    dicom = client.get(f"/api/v1/images/{item['image_id']}/dicom", headers=doc)
    assert dicom.status_code == 200 and dicom.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(dicom.content))
    assert ds.Rows == 32 and ds.PatientIdentityRemoved == "YES"
    png = client.get(f"/api/v1/images/{item['image_id']}/frames/0", headers=doc)
    assert png.headers["content-type"] == "image/png"
    assert decode_png(png.content).shape == (32, 48)
    thumb = client.get(f"/api/v1/images/{item['image_id']}/thumbnail", headers=doc)
    assert decode_png(thumb.content).shape == (32, 48)  # already small: not upscaled
    assert client.get(f"/api/v1/images/{item['image_id']}/frames/3", headers=doc).status_code == 404
    assert client.get(f"/api/v1/images/{item['image_id']}/frames/0?bits=16", headers=doc).status_code == 404


def test_downloads_are_audited_and_auditor_sees_no_images(
    client: TestClient, staff: dict[str, dict[str, str]]
) -> None:
    (item,) = _ingest(client, staff["uploader"], to_bytes(make_ct()))
    assert (
        client.get(f"/api/v1/images/{item['image_id']}/dicom", headers=staff["clinician"]).status_code == 200
    )
    assert client.get(f"/api/v1/images/{item['image_id']}/dicom", headers=staff["auditor"]).status_code == 403
    log = client.get(f"/api/v1/audit?resource_id={item['image_id']}", headers=staff["auditor"]).json()
    actions = [(e["action"], e["actor_role"]) for e in log["items"]]
    assert ("image.download.dicom", "clinician") in actions
    assert ("access.denied", "auditor") not in actions  # denied events carry the route, not the id
    assert ("ingest.store", None) in actions


def test_tampered_blob_gives_a_clear_integrity_error(
    client: TestClient, staff: dict[str, dict[str, str]], container: Container
) -> None:
    (item,) = _ingest(client, staff["uploader"], to_bytes(make_ct()))
    image = client.get(f"/api/v1/images/{item['image_id']}", headers=staff["admin"]).json()
    dicom = next(o for o in image["objects"] if o["kind"] == "dicom")
    from irmsia.db.imaging import StoredObject

    with container.sessions() as session:
        stored = session.get(StoredObject, dicom["id"])
        key, end = stored.storage_key, stored.blob_offset + stored.size
    blob = bytearray(container.blobs.get(key))
    blob[end - 20] ^= 0x01  # inside the DICOM object, which shares the blob with the others
    container.blobs.put(key, bytes(blob))
    response = client.get(f"/api/v1/images/{item['image_id']}/dicom", headers=staff["admin"])
    assert response.status_code == 500
    assert response.json()["error"] == "integrity_error"
    # The other objects of the blob are intact and still read.
    thumbnail = client.get(f"/api/v1/images/{item['image_id']}/thumbnail", headers=staff["admin"])
    assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\x89PNG")


def test_vault_reidentifies_for_admins_only_and_is_audited(
    client: TestClient, staff: dict[str, dict[str, str]]
) -> None:
    (item,) = _ingest(client, staff["uploader"], to_bytes(make_ct()))
    pseudonym = item["patient_pseudonym"]
    assert client.get(f"/api/v1/vault/patient/{pseudonym}", headers=staff["radiologist"]).status_code == 403
    found = client.get(f"/api/v1/vault/patient/{pseudonym}", headers=staff["admin"])
    assert found.status_code == 200
    assert found.json()["identity"]["patient_id"] == PHI["PatientID"]
    assert found.json()["identity"]["patient_name"] == PHI["PatientName"]
    assert client.get("/api/v1/vault/patient/IRM-NOSUCH", headers=staff["admin"]).status_code == 404
    log = client.get("/api/v1/audit?action=vault.read", headers=staff["auditor"]).json()
    assert log["total"] == 2 and log["items"][0]["resource_id"] == "IRM-NOSUCH"


def test_quarantine_holds_suspect_images_until_an_admin_releases_them(
    tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    settings = make_settings(tmp_path / "q", db_url, INGEST_EXECUTOR="inline", BURNED_IN_POLICY="quarantine")
    container = build_container(settings, clock=clock)
    from irmsia.api.app import create_app

    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        accounts = Accounts(container, client)
        accounts.create("adm", "admin")
        accounts.create("doc", "clinician")
        admin, doc = accounts.headers("adm"), accounts.headers("doc")
        (item,) = _ingest(client, admin, to_bytes(make_secondary_capture()))
        assert item["status"] == "quarantined"
        assert client.get("/api/v1/studies", headers=doc).json()["total"] == 0
        assert client.get(f"/api/v1/images/{item['image_id']}/dicom", headers=doc).status_code == 404
        queue = client.get("/api/v1/quarantine", headers=admin).json()
        assert [i["id"] for i in queue["items"]] == [item["image_id"]]
        assert client.post(f"/api/v1/quarantine/{item['image_id']}/release", headers=admin).status_code == 200
        assert client.get("/api/v1/studies", headers=doc).json()["total"] == 1
        assert client.post(f"/api/v1/quarantine/{item['image_id']}/release", headers=admin).status_code == 409
    container.close()


def test_mask_policy_blanks_configured_regions(tmp_path: Path, db_url: str, clock: FakeClock) -> None:
    settings = make_settings(
        tmp_path / "m",
        db_url,
        INGEST_EXECUTOR="inline",
        BURNED_IN_POLICY="mask",
        BURNED_IN_MASK_REGIONS="[[0,0,8,4]]",
    )
    container = build_container(settings, clock=clock)
    from irmsia.api.app import create_app

    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        accounts = Accounts(container, client)
        accounts.create("adm", "admin")
        admin = accounts.headers("adm")
        (item,) = _ingest(client, admin, to_bytes(make_secondary_capture()))
        assert item["status"] == "stored"
        ds = pydicom.dcmread(
            io.BytesIO(client.get(f"/api/v1/images/{item['image_id']}/dicom", headers=admin).content)
        )
        pixels = ds.pixel_array
        assert np.all(pixels[0:4, 0:8] == 0) and np.all(pixels[4:, :] == 7)
        assert ds.BurnedInAnnotation == "NO"
        codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
        assert "113101" in codes  # Clean Pixel Data Option
    container.close()


def test_key_rotation_rewraps_without_touching_blobs(
    client: TestClient, staff: dict[str, dict[str, str]], container: Container
) -> None:
    (item,) = _ingest(client, staff["uploader"], to_bytes(make_ct()))
    before = {key: container.blobs.get(key) for key in container.blobs.list("objects/")}
    status = client.get("/api/v1/keys", headers=staff["admin"]).json()
    # 3 stored objects (dicom, png, thumbnail) + 2 vault entries (patient, accession)
    assert status["current_key_id"] == "local-1" and status["wrapped_by_key"] == {"local-1": 5}
    rotated = client.post("/api/v1/keys/rotate", headers=staff["admin"]).json()
    assert rotated["new_key_id"] == "local-2" and rotated["rewrapped"] == 5
    after = {key: container.blobs.get(key) for key in container.blobs.list("objects/")}
    assert before == after
    assert client.get("/api/v1/keys", headers=staff["admin"]).json()["wrapped_by_key"] == {"local-2": 5}
    assert (
        client.get(f"/api/v1/images/{item['image_id']}/dicom", headers=staff["clinician"]).status_code == 200
    )
    assert client.post("/api/v1/keys/rotate", headers=staff["radiologist"]).status_code == 403


def test_deleting_a_study_destroys_its_keys_and_blobs(
    client: TestClient, staff: dict[str, dict[str, str]], container: Container
) -> None:
    first, second = _ingest(client, staff["uploader"], to_bytes(make_ct()), to_bytes(make_cr()))
    kept = set(container.blobs.list("objects/"))
    assert (
        client.delete(f"/api/v1/studies/{first['study_id']}", headers=staff["radiologist"]).status_code == 403
    )
    assert client.delete(f"/api/v1/studies/{first['study_id']}", headers=staff["admin"]).status_code == 204
    assert count_rows(container, "stored_objects") == 3
    assert len(kept) == 2  # one blob per instance, holding its DICOM, PNG and thumbnail
    assert len(set(container.blobs.list("objects/"))) == len(kept) - 1
    assert client.get(f"/api/v1/studies/{first['study_id']}", headers=staff["admin"]).status_code == 404
    assert client.get(f"/api/v1/images/{second['image_id']}/dicom", headers=staff["admin"]).status_code == 200


def test_wrong_master_key_cannot_read_anything(
    client: TestClient,
    staff: dict[str, dict[str, str]],
    container: Container,
    settings: Settings,
    clock: FakeClock,
) -> None:
    (item,) = _ingest(client, staff["uploader"], to_bytes(make_ct()))
    env = settings.as_env()
    env["ENCRYPTION_KEY"] = "00" * 32
    from irmsia.api.app import create_app
    from irmsia.config import load_settings

    other = build_container(load_settings(env), clock=clock)
    with TestClient(create_app(container=other), raise_server_exceptions=False) as second:
        response = second.get(f"/api/v1/images/{item['image_id']}/dicom", headers=staff["admin"])
    other.close()
    assert response.status_code == 500
    assert response.json()["error"] == "integrity_error"
