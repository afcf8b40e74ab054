"""The whole ingest path against a real S3-compatible server (moto's, on loopback)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from irmsia.api.app import create_app
from irmsia.bootstrap import build_container
from tests.conftest import Accounts, FakeClock, make_settings
from tests.contract.conftest import S3Server
from tests.factories import make_ct, to_bytes


def test_upload_browse_download_and_delete_on_s3(
    s3_server: S3Server, tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    bucket = s3_server.new_bucket()
    settings = make_settings(
        tmp_path / "data",
        db_url,
        INGEST_EXECUTOR="inline",
        STORAGE_BACKEND="s3",
        S3_BUCKET=bucket,
        S3_PREFIX="irmsia",
        S3_ENDPOINT_URL=s3_server.endpoint_url,
        S3_ACCESS_KEY_ID=s3_server.access_key_id,
        S3_SECRET_ACCESS_KEY=s3_server.secret_access_key,
    )
    container = build_container(settings, clock=clock)
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        accounts = Accounts(container, client)
        accounts.create("adm", "admin")
        headers = accounts.headers("adm")
        assert client.get("/readyz").json()["checks"]["storage"] == "ok"
        files = [("files", ("x.dcm", to_bytes(make_ct()), "application/dicom"))]
        item = client.post("/api/v1/dicom/upload", files=files, headers=headers).json()["files"][0]
        assert item["status"] == "stored"
        listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
        # DICOM, PNG and thumbnail in one object, each read back with a ranged GET
        assert len(listed) == 1 and listed[0]["Key"].startswith("irmsia/objects/")
        dicom = client.get(f"/api/v1/images/{item['image_id']}/dicom", headers=headers)
        assert dicom.status_code == 200 and dicom.content[128:132] == b"DICM"
        for path in ("frames/0", "thumbnail"):
            image = client.get(f"/api/v1/images/{item['image_id']}/{path}", headers=headers)
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        assert client.delete(f"/api/v1/studies/{item['study_id']}", headers=headers).status_code == 204
        assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    container.close()
