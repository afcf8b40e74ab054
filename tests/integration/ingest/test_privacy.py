"""PHI canaries planted everywhere must not appear in any stored object, log, record or response."""

from __future__ import annotations

import contextlib
import io
import logging

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from irmsia.bootstrap import Container
from irmsia.crypto.keys import WrappedKey
from irmsia.db.base import Base
from irmsia.db.imaging import StoredObject
from irmsia.errors import Conflict
from tests.factories import PHI, contains_phi, make_ct, to_bytes
from tests.integration.ingest.conftest import upload


def _original_uids(ds: pydicom.Dataset) -> list[str]:
    return [
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        str(ds.FrameOfReferenceUID),
    ]


def _decrypted_objects(container: Container) -> list[tuple[str, bytes]]:
    """Every stored object, decrypted; checks on the way that the objects sharing a blob
    cover it exactly (no byte of a blob lies outside an encrypted object)."""
    with container.sessions() as session:
        rows = session.scalars(select(StoredObject)).all()
        spans: dict[str, list[tuple[int, int]]] = {}
        for row in rows:
            spans.setdefault(row.storage_key, []).append((row.blob_offset, row.size))
        for key, ranges in spans.items():
            ends = [0]
            for offset, size in sorted(ranges):
                assert offset == ends[-1]
                ends.append(offset + size)
            assert ends[-1] == container.blobs.size(key)
        return [
            (
                row.kind,
                container.cipher.decrypt(
                    row.id,
                    container.blobs.get(row.storage_key, offset=row.blob_offset, length=row.size),
                    WrappedKey(row.key_id, row.wrapped_key),
                ),
            )
            for row in rows
        ]


def _database_text(container: Container) -> str:
    dump = []
    with container.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(text(f"SELECT * FROM {table.name}")):  # noqa: S608
                dump.append(repr(tuple(row)))
    return "\n".join(dump)


def test_no_phi_anywhere_after_ingest(
    client: TestClient, uploader: dict[str, str], container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ds = make_ct()
    originals = _original_uids(ds)
    canaries = [*PHI.values(), *originals]
    response = upload(
        client, uploader, [to_bytes(ds)], names=[f"{PHI['PatientName']}_{PHI['PatientID']}.dcm"]
    )
    assert response.status_code == 200, response.text
    image_id = response.json()["files"][0]["image_id"]
    study_id = response.json()["files"][0]["study_id"]

    objects = _decrypted_objects(container)
    assert {kind for kind, _ in objects} == {"dicom", "png", "thumbnail"}
    for kind, plaintext in objects:
        assert contains_phi(plaintext, canaries) == [], kind
    stored = pydicom.dcmread(io.BytesIO(next(p for k, p in objects if k == "dicom")))
    assert stored.PatientIdentityRemoved == "YES"
    assert stored.preamble == b"\0" * 128
    assert str(stored.PatientName).startswith("IRM")
    assert "PIDCANARY" not in str(stored.file_meta)

    keys = list(container.blobs.list(""))
    assert keys and not any(k.startswith("spool/") for k in keys)  # the encrypted original is gone
    assert contains_phi("\n".join(keys), canaries) == []
    for key in keys:
        assert contains_phi(container.blobs.get(key), canaries) == []

    assert contains_phi(_database_text(container), canaries) == []
    assert contains_phi(caplog.text, canaries) == []
    assert contains_phi(response.text, canaries) == []
    admin_views = [
        client.get(f"/api/v1/images/{image_id}", headers=uploader),  # 403 for an uploader: also checked
        client.get("/api/v1/studies", headers=_admin(client, container)),
        client.get(f"/api/v1/studies/{study_id}", headers=_admin(client, container)),
    ]
    for view in admin_views:
        assert contains_phi(view.text, canaries) == []


def _admin(client: TestClient, container: Container) -> dict[str, str]:
    from tests.conftest import TEST_PASSWORD
    from tests.support import CLI_CTX

    with contextlib.suppress(Conflict):  # already created earlier in this test
        container.accounts.create(CLI_CTX, "privacyadmin", "admin", TEST_PASSWORD)
    token = client.post("/api/v1/auth/login", data={"username": "privacyadmin", "password": TEST_PASSWORD})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def test_rejected_files_leave_no_phi_in_errors_or_jobs(
    client: TestClient, uploader: dict[str, str], container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ds = make_ct()
    del ds.StudyInstanceUID  # invalid: required attribute missing
    truncated = to_bytes(make_ct())[:-500]
    response = upload(client, uploader, [to_bytes(ds), truncated, to_bytes(make_ct())])
    assert [f["status"] for f in response.json()["files"]] == ["rejected", "rejected", "stored"]
    assert contains_phi(response.text) == []
    assert contains_phi(caplog.text) == []
    assert contains_phi(_database_text(container)) == []


def test_same_patient_gets_same_pseudonym_and_date_shift_across_uploads(
    client: TestClient, uploader: dict[str, str]
) -> None:
    first = upload(client, uploader, [to_bytes(make_ct(patient_name="Canaryname^Zelda"))]).json()["files"][0]
    second = upload(client, uploader, [to_bytes(make_ct(patient_name="CANARYNAME^ZELDA Q"))]).json()["files"][
        0
    ]
    other = upload(client, uploader, [to_bytes(make_ct(patient_id="OTHERCANARY1"))]).json()["files"][0]
    assert first["patient_pseudonym"] == second["patient_pseudonym"] != other["patient_pseudonym"]
    assert first["study_id"] != second["study_id"]


def test_same_study_uploaded_twice_keeps_one_study_and_consistent_uids(
    client: TestClient, uploader: dict[str, str], container: Container
) -> None:
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    a = upload(client, uploader, [to_bytes(make_ct(study_uid=study, series_uid=series))]).json()["files"][0]
    b = upload(client, uploader, [to_bytes(make_ct(study_uid=study, series_uid=series))]).json()["files"][0]
    assert a["study_id"] == b["study_id"] and a["series_id"] == b["series_id"]
    assert a["image_id"] != b["image_id"]
    dicoms = [p for k, p in _decrypted_objects(container) if k == "dicom"]
    parsed = [pydicom.dcmread(io.BytesIO(p)) for p in dicoms]
    assert parsed[0].StudyInstanceUID == parsed[1].StudyInstanceUID != study
    assert parsed[0].StudyDate == parsed[1].StudyDate != "20240105"
    # References inside a dataset follow the replaced UIDs.
    for item in parsed:
        assert item.ReferencedImageSequence[0].ReferencedSOPInstanceUID == item.SOPInstanceUID
