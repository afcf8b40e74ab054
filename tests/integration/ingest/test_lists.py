"""Listing series and images with filters and pages; the studies' body part filter."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from irmsia.api.app import create_app
from irmsia.bootstrap import build_container
from tests.conftest import Accounts, FakeClock, make_settings
from tests.factories import make_cr, make_ct, make_secondary_capture, to_bytes
from tests.integration.ingest.conftest import upload


def _ct(study: str, series: str, series_number: int, instance: int, body_part: str, **kw: str) -> bytes:
    ds = make_ct(study_uid=study, series_uid=series, rows=8, columns=8, phi_extras=False, **kw)
    ds.SeriesNumber, ds.InstanceNumber, ds.BodyPartExamined = series_number, instance, body_part
    return to_bytes(ds)


@pytest.fixture
def corpus(client: TestClient, accounts: Accounts) -> dict[str, object]:
    """Patient A: a CT study (series 1: three CHEST slices, series 2: one ABDOMEN) and a CR.
    Patient B: one HEAD CT."""
    accounts.create("modality1", "uploader")
    study, chest, abdomen = generate_uid(), generate_uid(), generate_uid()
    blobs = [
        _ct(study, chest, 1, 3, "CHEST"),
        _ct(study, abdomen, 2, 1, "ABDOMEN"),
        _ct(study, chest, 1, 1, "CHEST"),
        _ct(study, chest, 1, 2, "CHEST"),
        to_bytes(make_cr()),
        _ct(generate_uid(), generate_uid(), 1, 1, "HEAD", patient_id="OTHERPID77", patient_name="Other^Pat"),
    ]
    response = upload(client, accounts.headers("modality1"), blobs)
    assert response.status_code == 200, response.text
    files = response.json()["files"]
    assert [f["status"] for f in files] == ["stored"] * 6
    return {"files": files}


@pytest.fixture
def doc(accounts: Accounts) -> dict[str, str]:
    accounts.create("doc1", "clinician")
    return accounts.headers("doc1")


def test_series_are_filtered_by_study_modality_body_part_and_patient(
    client: TestClient, corpus: dict[str, object], doc: dict[str, str]
) -> None:
    files: list[dict[str, str]] = corpus["files"]  # type: ignore[assignment]
    ct_study, cr, other = files[0]["study_id"], files[4], files[5]
    by_study = client.get(f"/api/v1/series?study={ct_study}", headers=doc).json()
    assert by_study["total"] == 2
    assert [(s["series_number"], s["body_part"], s["images"]) for s in by_study["items"]] == [
        (1, "CHEST", 3),
        (2, "ABDOMEN", 1),
    ]
    assert {s["study_id"] for s in by_study["items"]} == {ct_study}
    assert by_study["items"][0]["patient_pseudonym"] == files[0]["patient_pseudonym"]
    assert by_study["items"][0]["id"] == files[0]["series_id"]

    only_cr = client.get("/api/v1/series?modality=cr", headers=doc).json()
    assert [s["id"] for s in only_cr["items"]] == [cr["series_id"]]
    chest = client.get("/api/v1/series?body_part=chest", headers=doc).json()
    assert {s["id"] for s in chest["items"]} == {files[0]["series_id"], cr["series_id"]}
    ct_chest = client.get("/api/v1/series?body_part=CHEST&modality=CT", headers=doc).json()
    assert [s["id"] for s in ct_chest["items"]] == [files[0]["series_id"]]
    patient_b = client.get(f"/api/v1/series?patient={other['patient_pseudonym']}", headers=doc).json()
    assert [s["id"] for s in patient_b["items"]] == [other["series_id"]]
    patient_a = client.get(f"/api/v1/series?patient={files[0]['patient_pseudonym']}", headers=doc).json()
    assert patient_a["total"] == 3
    assert client.get("/api/v1/series?patient=IRM-NOSUCH", headers=doc).json() == {
        "items": [],
        "total": 0,
        "offset": 0,
        "limit": 50,
    }


def test_series_pages_cover_every_series_once(
    client: TestClient, corpus: dict[str, object], doc: dict[str, str]
) -> None:
    everything = client.get("/api/v1/series", headers=doc).json()
    assert everything["total"] == 4
    seen = []
    for offset in range(0, 4, 3):
        page = client.get(f"/api/v1/series?limit=3&offset={offset}", headers=doc).json()
        assert page["total"] == 4 and page["offset"] == offset and page["limit"] == 3
        seen += [s["id"] for s in page["items"]]
    assert seen == [s["id"] for s in everything["items"]] and len(set(seen)) == 4


def test_images_are_listed_by_series_and_study_in_instance_order(
    client: TestClient, corpus: dict[str, object], doc: dict[str, str]
) -> None:
    files: list[dict[str, str]] = corpus["files"]  # type: ignore[assignment]
    chest_series = files[0]["series_id"]
    in_series = client.get(f"/api/v1/images?series={chest_series}", headers=doc).json()
    assert in_series["total"] == 3
    assert [i["instance_number"] for i in in_series["items"]] == [1, 2, 3]
    assert [i["id"] for i in in_series["items"]] == [
        files[2]["image_id"],
        files[3]["image_id"],
        files[0]["image_id"],
    ]
    assert {i["series_id"] for i in in_series["items"]} == {chest_series}
    in_study = client.get(f"/api/v1/images?study={files[0]['study_id']}", headers=doc).json()
    assert in_study["total"] == 4
    assert in_study["items"][-1]["id"] == files[1]["image_id"]  # series 2 after series 1
    page = client.get(f"/api/v1/images?study={files[0]['study_id']}&limit=2&offset=2", headers=doc).json()
    assert [i["id"] for i in page["items"]] == [i["id"] for i in in_study["items"][2:]]
    assert client.get("/api/v1/images", headers=doc).json()["total"] == 6
    both = client.get(f"/api/v1/images?study={files[4]['study_id']}&series={chest_series}", headers=doc)
    assert both.json()["total"] == 0  # the series is not in that study


def test_studies_are_filtered_by_patient_pseudonym(
    client: TestClient, corpus: dict[str, object], doc: dict[str, str]
) -> None:
    """Regression: ``?patient=`` was ignored (a shared Query declaration took another name)."""
    files: list[dict[str, str]] = corpus["files"]  # type: ignore[assignment]
    other = client.get(f"/api/v1/studies?patient={files[5]['patient_pseudonym']}", headers=doc).json()
    assert [s["id"] for s in other["items"]] == [files[5]["study_id"]]
    first = client.get(f"/api/v1/studies?patient={files[0]['patient_pseudonym']}", headers=doc).json()
    assert {s["id"] for s in first["items"]} == {files[0]["study_id"], files[4]["study_id"]}


def test_studies_are_filtered_by_body_part(
    client: TestClient, corpus: dict[str, object], doc: dict[str, str]
) -> None:
    files: list[dict[str, str]] = corpus["files"]  # type: ignore[assignment]
    head = client.get("/api/v1/studies?body_part=head", headers=doc).json()
    assert [s["id"] for s in head["items"]] == [files[5]["study_id"]]
    chest = client.get("/api/v1/studies?body_part=CHEST", headers=doc).json()
    assert {s["id"] for s in chest["items"]} == {files[0]["study_id"], files[4]["study_id"]}
    abdomen = client.get("/api/v1/studies?body_part=ABDOMEN&modality=CT", headers=doc).json()
    assert [s["id"] for s in abdomen["items"]] == [files[0]["study_id"]]
    assert client.get("/api/v1/studies?body_part=KNEE", headers=doc).json()["total"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "/api/v1/series?body_part=CHEST;DROP",
        "/api/v1/series?modality=C",
        "/api/v1/series?limit=0",
        "/api/v1/series?offset=-1",
        "/api/v1/series?study=" + "a" * 33,
        "/api/v1/images?limit=501",
        "/api/v1/images?series=" + "b" * 33,
        "/api/v1/studies?body_part=" + "X" * 17,
    ],
)
def test_bad_list_parameters_are_a_clear_422(client: TestClient, doc: dict[str, str], query: str) -> None:
    response = client.get(query, headers=doc)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_lists_are_audited(
    client: TestClient, corpus: dict[str, object], doc: dict[str, str], accounts: Accounts
) -> None:
    client.get("/api/v1/series?modality=CT", headers=doc)
    client.get("/api/v1/images?limit=2", headers=doc)
    accounts.create("aud1", "auditor")
    auditor = accounts.headers("aud1")
    series = client.get("/api/v1/audit?action=series.list", headers=auditor).json()["items"]
    images = client.get("/api/v1/audit?action=image.list", headers=auditor).json()["items"]
    assert [(e["actor_role"], e["detail"]) for e in series] == [("clinician", {"returned": 3})]
    assert [(e["actor_role"], e["detail"]) for e in images] == [("clinician", {"returned": 2})]


def test_quarantined_images_are_listed_for_admins_only(tmp_path: Path, db_url: str, clock: FakeClock) -> None:
    settings = make_settings(tmp_path / "q", db_url, INGEST_EXECUTOR="inline", BURNED_IN_POLICY="quarantine")
    container = build_container(settings, clock=clock)
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
            accounts = Accounts(container, client)
            accounts.create("adm", "admin")
            accounts.create("doc", "clinician")
            admin, doc = accounts.headers("adm"), accounts.headers("doc")
            files = upload(client, admin, [to_bytes(make_secondary_capture())]).json()["files"]
            assert files[0]["status"] == "quarantined"
            for path in (
                "/api/v1/series",
                "/api/v1/images",
                f"/api/v1/images?series={files[0]['series_id']}",
            ):
                assert client.get(path, headers=doc).json()["total"] == 0, path
                assert client.get(path, headers=admin).json()["total"] == 1, path
            admin_series = client.get("/api/v1/series", headers=admin).json()["items"]
            assert admin_series[0]["images"] == 1
            assert client.get("/api/v1/images", headers=admin).json()["items"][0]["status"] == "quarantined"
    finally:
        container.close()
