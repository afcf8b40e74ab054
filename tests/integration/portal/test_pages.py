"""Worklist, patient timeline, study page, viewer, image files and uploads through the portal."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from irmsia.bootstrap import Container
from irmsia.domain.png import decode_png
from tests.factories import PHI, contains_phi, make_ct, to_bytes
from tests.integration.portal.conftest import BrowserFactory, World, ingest

HREF = re.compile(r'(?:href|src|action)="([^"]+)"')


def _rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)


def test_worklist_filters_by_patient_date_and_modality(browser: BrowserFactory, world: World) -> None:
    reader = browser("clinician")
    everything = reader.get("/portal/worklist")
    assert everything.status_code == 200
    assert len(_rows(everything.text)) == 2
    by_patient = reader.get(f"/portal/worklist?patient={world.pseudonym}&date_from=&date_to=&modality=")
    assert len(_rows(by_patient.text)) == 2 and "Showing 1\N{EN DASH}2 of 2 studies" in by_patient.text
    by_date = reader.get(f"/portal/worklist?date_from={world.study_date}&date_to={world.study_date}")
    assert [world.study_id in row for row in _rows(by_date.text)] == [True]
    by_modality = reader.get("/portal/worklist?modality=CR")
    assert [world.older_study_id in row for row in _rows(by_modality.text)] == [True]
    none = reader.get("/portal/worklist?patient=IRM-NOBODY")
    assert _rows(none.text) == [] and "No study matches these filters" in none.text


def test_worklist_sorts_and_pages(browser: BrowserFactory, world: World, container: Container) -> None:
    for _ in range(26):
        ingest(container, to_bytes(make_ct(patient_id="MANYPID")))
    reader = browser("clinician")
    newest = reader.get("/portal/worklist")
    assert len(_rows(newest.text)) == 25 and "Page 1 of 2" in newest.text
    second = reader.get("/portal/worklist?page=2")
    assert len(_rows(second.text)) == 3
    oldest = reader.get("/portal/worklist?sort=oldest")
    dates = re.findall(r'<td class="nowrap">(\d{4}-\d{2}-\d{2})</td>', oldest.text)
    assert dates == sorted(dates) and world.older_study_id in oldest.text
    assert len(_rows(reader.get("/portal/worklist?sort=oldest&page=2").text)) == 3


def test_bad_filters_give_a_400_page_not_json(browser: BrowserFactory, world: World) -> None:
    reader = browser("clinician")
    for query in ("date_from=yesterday", "date_from=2024-02-01&date_to=2024-01-01", "modality=C1", "page=0"):
        response = reader.get(f"/portal/worklist?{query}")
        assert response.status_code == 400, query
        assert response.headers["content-type"].startswith("text/html")
        assert "Error 400" in response.text


def test_patient_page_shows_every_study_on_a_timeline(browser: BrowserFactory, world: World) -> None:
    reader = browser("radiologist")
    page = reader.get(f"/portal/patients/{world.pseudonym}")
    assert page.status_code == 200
    assert page.text.index(world.study_id) < page.text.index(world.older_study_id)  # newest first
    assert page.text.count('class="timeline-card"') == 2
    missing = reader.get("/portal/patients/IRM-NOBODY")
    assert missing.status_code == 404 and "Not found" in missing.text


def test_study_page_lists_series_thumbnails_and_downloads(browser: BrowserFactory, world: World) -> None:
    reader = browser("clinician")
    page = reader.get(f"/portal/studies/{world.study_id}")
    assert page.status_code == 200
    assert f"/portal/series/{world.series_id}" in page.text
    thumbnail = re.search(r'src="(/portal/images/[0-9a-f]+/thumbnail)"', page.text)
    assert thumbnail is not None
    png = reader.get(thumbnail.group(1))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["cache-control"] == "private, no-store"
    for image_id in world.image_ids:
        assert f"/portal/images/{image_id}/dicom" in page.text
    dicom = reader.get(f"/portal/images/{world.image_ids[0]}/dicom")
    assert dicom.headers["content-disposition"] == f'attachment; filename="{world.image_ids[0]}.dcm"'
    assert pydicom.dcmread(io.BytesIO(dicom.content)).Modality == "CT"
    assert "No image of this study has been analysed yet." in page.text
    assert "Who looked at this study" not in page.text


def test_admins_get_a_link_to_who_looked_at_the_study(browser: BrowserFactory, world: World) -> None:
    page = browser("admin").get(f"/portal/studies/{world.study_id}")
    assert f"/portal/audit/study-access?study={world.study_id}" in page.text


def test_viewer_page_carries_slices_in_order_and_the_modality_presets(
    browser: BrowserFactory, world: World
) -> None:
    page = browser("clinician").get(f"/portal/series/{world.series_id}")
    assert page.status_code == 200
    raw = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', page.text, flags=re.S)
    assert raw is not None
    data = json.loads(raw.group(1))
    assert [(s["image"], s["frame"], s["number"]) for s in data["slices"]] == [
        (world.image_ids[0], 0, 1),
        (world.image_ids[1], 0, 2),
    ]
    assert [p["name"] for p in data["presets"]] == ["auto", "brain", "soft tissue", "lung", "bone"]
    assert data["presets"][3] == {"name": "lung", "center": -600.0, "width": 1500.0}


def test_render_applies_the_requested_window(browser: BrowserFactory, world: World) -> None:
    reader = browser("clinician")
    base = f"/portal/images/{world.image_ids[0]}/frames/0"
    stored = decode_png(reader.get(base).content)
    auto = reader.get(f"{base}/render")
    assert (auto.headers["x-window-center"], auto.headers["x-window-width"]) == ("40", "400")
    assert np.array_equal(decode_png(auto.content), stored)  # same window as the stored render
    lung = reader.get(f"{base}/render?center=-600&width=1500")
    assert lung.status_code == 200 and lung.headers["x-window-center"] == "-600"
    assert not np.array_equal(decode_png(lung.content), stored)
    for query in ("center=40", "center=40&width=0", "center=x&width=1", "center=nan&width=10"):
        bad = reader.get(f"{base}/render?{query}")
        assert bad.status_code == 400, query
    assert reader.get(f"/portal/images/{world.image_ids[0]}/frames/7/render").status_code == 404


def test_render_is_audited_like_a_download(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    from irmsia.db.auditlog import AuditFilter
    from tests.support import CLI_CTX

    browser("clinician").get(f"/portal/images/{world.image_ids[0]}/frames/0/render?center=0&width=100")
    events = container.audit.search(CLI_CTX, AuditFilter(action="image.download.dicom")).items
    assert [(e.actor_name, e.resource_id) for e in events] == [("clinician1", world.image_ids[0])]


def test_unknown_ids_and_pages_give_404_pages(browser: BrowserFactory, world: World) -> None:
    reader = browser("clinician")
    for path in (
        "/portal/studies/0123",
        "/portal/series/0123",
        "/portal/images/0123/dicom",
        "/portal/nowhere/at/all",
    ):
        response = reader.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
        assert "Not found" in response.text


def test_pages_and_their_links_carry_no_phi(browser: BrowserFactory, world: World) -> None:
    admin = browser("admin")
    for path in (
        "/portal/worklist",
        f"/portal/patients/{world.pseudonym}",
        f"/portal/studies/{world.study_id}",
        f"/portal/series/{world.series_id}",
        "/portal/admin",
        "/portal/admin/jobs",
        "/portal/admin/quarantine",
        "/portal/audit",
        f"/portal/audit/study-access?study={world.study_id}",
    ):
        page = admin.get(path)
        assert page.status_code == 200, path
        assert contains_phi(page.text) == [], path
        for link in HREF.findall(page.text):
            assert contains_phi(link) == [] and "PORTALPID01" not in link, (path, link)


def test_upload_answers_per_object_without_file_names(browser: BrowserFactory, world: World) -> None:
    uploader = browser("uploader")
    name = f"{PHI['PatientName']}.dcm"
    stored = uploader.upload(to_bytes(make_ct()), names=[name])
    assert stored.status_code == 200
    body = stored.json()
    assert body["summary"]["stored"] == 1
    assert [(r["part"], r["status"]) for r in body["results"]] == [("1", "stored")]
    assert "Canaryname" not in stored.text and contains_phi(stored.text) == []
    rejected = uploader.upload(b"definitely not DICOM" * 20, names=["secret-name.txt"])
    result = rejected.json()["results"][0]
    assert result["status"] == "rejected" and result["reason"] == "not_dicom"
    assert "secret-name" not in rejected.text


def test_a_zip_upload_reports_each_member(browser: BrowserFactory, world: World) -> None:
    study_uid = generate_uid()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for index in range(2):
            zipped.writestr(f"folder/slice{index}.dcm", to_bytes(make_ct(study_uid=study_uid, seed=index)))
        zipped.writestr("folder/readme.txt", b"not an image" * 10)
    response = browser("radiologist").upload(archive.getvalue())
    results = response.json()["results"]
    assert [(r["part"], r["status"]) for r in results] == [
        ("1/1", "stored"),
        ("1/2", "stored"),
        ("1/3", "rejected"),
    ]
    assert response.json()["summary"] == {
        "stored": 2,
        "duplicate": 0,
        "quarantined": 0,
        "rejected": 1,
        "pending": 0,
    }


def test_an_upload_repeated_is_a_duplicate(browser: BrowserFactory, world: World) -> None:
    blob = to_bytes(make_ct())
    uploader = browser("uploader")
    assert uploader.upload(blob).json()["results"][0]["status"] == "stored"
    again = uploader.upload(blob).json()["results"][0]
    assert again["status"] == "duplicate" and again["study_id"]


def test_upload_page_offers_study_links_only_to_readers(browser: BrowserFactory) -> None:
    assert 'data-can-view="false"' in browser("uploader").get("/portal/upload").text
    assert 'data-can-view="true"' in browser("radiologist").get("/portal/upload").text


def test_pages_carry_a_strict_content_security_policy(browser: BrowserFactory, world: World) -> None:
    page = browser("clinician").get("/portal/worklist")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and " style=" not in page.text and " on" + "click=" not in page.text


def test_static_files_are_served_locally(browser: BrowserFactory) -> None:
    visitor = browser()
    for name in ("portal.css", "portal.js", "upload.js", "viewer.js", "favicon.svg"):
        assert visitor.get(f"/portal/static/{name}").status_code == 200, name
    login = visitor.get("/portal/login").text
    assert "http://" not in login.replace('xmlns="http://www.w3.org', "") and "https://" not in login
