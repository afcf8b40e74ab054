"""Reading a study's report: its images' thumbnails are part of one audited read."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from irmsia.api.app import create_app
from irmsia.bootstrap import build_container
from irmsia.db.models import AuditEvent
from irmsia.domain.png import decode_png
from tests.conftest import Accounts, FakeClock, make_settings
from tests.factories import make_ct, to_bytes

pytestmark = pytest.mark.db


def _count(container, action: str) -> int:  # type: ignore[no-untyped-def]
    with container.sessions() as session:
        return int(session.scalar(select(func.count()).where(AuditEvent.action == action)) or 0)


def test_a_report_read_is_one_audit_record_however_many_images_it_shows(
    tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    container = build_container(
        make_settings(tmp_path / "data", db_url, INGEST_EXECUTOR="inline"), clock=clock
    )
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
            accounts = Accounts(container, client)
            accounts.create("reader5", "radiologist")
            headers = accounts.headers("reader5")
            study, series = generate_uid(), generate_uid()
            files = [
                (
                    "files",
                    (
                        f"{n}.dcm",
                        to_bytes(make_ct(study_uid=study, series_uid=series, seed=n)),
                        "application/dicom",
                    ),
                )
                for n in range(4)
            ]
            uploaded = client.post("/api/v1/dicom/upload", files=files, headers=headers).json()["files"]
            for image in uploaded:
                assert (
                    client.post(f"/api/v1/ai/analyze/{image['image_id']}", headers=headers).status_code == 200
                )
            study_id = uploaded[0]["study_id"]
            thumbnails_before, reads_before = (
                _count(container, "image.download.thumbnail"),
                _count(container, "report.read"),
            )
            first = client.get(f"/api/v1/reports/{study_id}", headers=headers)
            second = client.get(f"/api/v1/reports/{study_id}", headers=headers)
            assert first.status_code == second.status_code == 200
            # Two reads: two records, none per image.
            assert _count(container, "report.read") == reads_before + 2
            assert _count(container, "image.download.thumbnail") == thumbnails_before
            report = first.json()
            assert len(report["images"]) == 4
            for image in report["images"]:  # every thumbnail is there, decrypted, a real PNG
                png = base64.urlsafe_b64decode(image["thumbnail_png"])  # pydantic: URL-safe base64
                assert decode_png(png).shape[0] > 0
            # The same content registers the same digest on every read.
            assert report["ledger_hash"] == second.json()["ledger_hash"]
            assert len(report["ledger_hash"]) == len(hashlib.sha256().hexdigest())
    finally:
        container.close()
