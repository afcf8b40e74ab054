"""The portal in a real headless Chromium: sign-in per role, upload, worklist, viewer, access, logout."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.browser.conftest import LiveServer, needs_browser, screenshot, sign_in
from tests.browser.phantom import phantom_ct
from tests.factories import PHI, contains_phi, to_bytes

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request, Response

pytestmark = [pytest.mark.browser, needs_browser]

LANDING = {
    "admin": "/portal/worklist",
    "radiologist": "/portal/worklist",
    "clinician": "/portal/worklist",
    "uploader": "/portal/upload",
    "auditor": "/portal/audit",
}
NAV = {
    "admin": ["Worklist", "Upload", "Admin", "Audit"],
    "radiologist": ["Worklist", "Upload"],
    "clinician": ["Worklist"],
    "uploader": ["Upload"],
    "auditor": ["Audit"],
}


def canvas_pixels(page: Page) -> str:
    return str(page.locator("#viewer-canvas").evaluate("canvas => canvas.toDataURL('image/png')"))


def wait_loaded(page: Page, fragment: str) -> None:
    """Wait until the viewer has drawn an image whose URL contains ``fragment``."""
    page.wait_for_function(
        "fragment => (document.getElementById('viewer').dataset.loaded || '').includes(fragment)",
        arg=fragment,
    )


@pytest.mark.parametrize("role", list(LANDING))
def test_each_role_signs_in_and_lands_on_its_section(page: Page, role: str) -> None:
    page.goto("/portal/worklist")
    page.wait_for_url(re.compile(r"/portal/login\?next="))
    if role == "admin":
        screenshot(page, "login")
    sign_in(page, role)
    assert page.url.endswith(LANDING[role])
    links = page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts()
    assert links == NAV[role]


def test_upload_shows_progress_and_a_result_per_file_without_sending_names(
    page: Page, live: LiveServer
) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    files = [
        {
            "name": f"chest-ct-slice{i}.dcm",
            "mimeType": "application/dicom",
            "buffer": to_bytes(
                phantom_ct(
                    patient_id="UPLOADPID01", study_uid=study_uid, series_uid=series_uid, index=i, slices=3
                )
            ),
        }
        for i in range(3)
    ]
    files.append({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"this is not DICOM at all" * 10})
    sent: list[bytes] = []
    answers: list[str] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/portal/upload/file"):
            sent.append(request.post_data_buffer or b"")

    def on_response(response: Response) -> None:
        if response.url.endswith("/portal/upload/file"):
            answers.append(response.text())

    page.on("request", on_request)
    page.on("response", on_response)
    sign_in(page, "uploader")
    page.locator("#file-input").set_input_files(files)
    rows = page.locator("#upload-rows tr")
    page.wait_for_function("() => document.querySelectorAll('#upload-rows tr[data-status]').length === 4")
    statuses = [rows.nth(i).get_attribute("data-status") for i in range(4)]
    assert sorted(statuses) == ["rejected", "stored", "stored", "stored"]
    assert page.locator("[data-count=stored]").inner_text() == "3"
    assert page.locator("[data-count=rejected]").inner_text() == "1"
    rejected = rows.filter(has_text="notes.txt")
    assert "not_dicom" in rejected.inner_text() or "Rejected" in rejected.inner_text()
    assert [int(rows.nth(i).locator("progress").get_attribute("value") or 0) for i in range(4)] == [100] * 4
    # The browser shows the local names; neither the requests nor the answers carry them.
    assert "chest-ct-slice0.dcm" in page.locator("#upload-table").inner_text()
    assert len(sent) == 4 and len(answers) == 4
    assert not any(b"chest-ct-slice" in body or b"notes.txt" in body for body in sent)
    assert not any("chest-ct-slice" in text or "notes.txt" in text or contains_phi(text) for text in answers)
    screenshot(page, "upload")


def test_worklist_finds_the_study_by_date_and_by_patient(page: Page, live: LiveServer) -> None:
    sign_in(page, "clinician")
    page.get_by_label("From").fill(live.study_date)
    page.get_by_label("To").fill(live.study_date)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"date_from="))
    assert "patient=" in page.url and PHI["PatientID"] not in page.url
    table = page.locator("table.worklist-table")
    assert live.pseudonym in table.inner_text()
    assert table.locator("tbody tr").count() >= 1
    page.get_by_role("link", name="Clear").click()
    page.get_by_label("Patient pseudonym").fill(live.pseudonym)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"patient=IRM"))
    assert page.locator("table.worklist-table tbody tr").count() == 2
    screenshot(page, "worklist")
    page.locator("table.worklist-table").get_by_role("link", name=live.pseudonym).first.click()
    page.wait_for_url(re.compile(r"/portal/patients/"))
    cards = page.locator(".timeline-card")
    assert cards.count() == 2
    assert cards.first.inner_text().startswith(live.study_date)


def test_viewer_changes_the_window_and_scrolls_through_slices(page: Page, live: LiveServer) -> None:
    sign_in(page, "radiologist")
    page.goto(f"/portal/studies/{live.study_id}")
    page.locator(".series-thumb img").first.wait_for()
    # Wait for the thumbnail to load (it is fetched after the page, so an immediate check races).
    page.wait_for_function(
        "() => { const img = document.querySelector('.series-thumb img'); return img.complete && img.naturalWidth > 0; }"
    )
    screenshot(page, "study")
    page.get_by_role("link", name=re.compile("Open viewer")).first.click()
    page.wait_for_url(re.compile(r"/portal/series/"))
    wait_loaded(page, f"/images/{live.image_ids[0]}/frames/0")
    before = canvas_pixels(page)

    lung = page.locator("#preset option", has_text="lung").get_attribute("value")
    page.get_by_label("Window", exact=True).select_option(value=lung)
    wait_loaded(page, "render?center=-600")
    after = canvas_pixels(page)
    assert after != before, "the lung window must change the picture"
    assert "W 1500 · L -600" in page.locator("#overlay-window").inner_text()

    page.locator("#viewer-canvas").focus()
    page.keyboard.press("ArrowDown")
    wait_loaded(page, f"/images/{live.image_ids[1]}/frames/0/render")
    assert page.locator("#slice-label").inner_text() == "2 / 3"
    page.locator("#viewer-canvas").hover()
    page.mouse.wheel(0, 120)
    wait_loaded(page, f"/images/{live.image_ids[2]}/frames/0/render")
    assert page.locator("#slice-label").inner_text() == "3 / 3"
    assert page.locator("#viewer").get_attribute("data-slice") == "2"
    screenshot(page, "viewer", full_page=False)

    # Dragging sets a custom window: previewed at once, then rendered by the server.
    box = page.locator("#viewer-canvas").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 100, y + 40, steps=5)
    page.mouse.up()
    page.wait_for_function("() => document.getElementById('viewer').dataset.window !== '-600/1500'")
    custom = page.locator("#viewer").get_attribute("data-window") or ""
    center, width = (float(v) for v in custom.split("/"))
    assert center > -600 and width < 1500
    wait_loaded(page, f"render?center={int(center)}&width={int(width)}")
    assert page.get_by_label("Window", exact=True).input_value() == "custom"
    page.keyboard.press("+")
    assert page.locator("#zoom-label").inner_text() == "125%"
    page.keyboard.press("0")
    assert page.locator("#zoom-label").inner_text() == "100%"


def test_dicom_downloads_from_the_study_page_without_phi(page: Page, live: LiveServer) -> None:
    sign_in(page, "clinician")
    page.goto(f"/portal/studies/{live.study_id}")
    page.get_by_text("Images and DICOM downloads").first.click()
    with page.expect_download() as info:
        page.get_by_role("link", name=re.compile("^Download DICOM")).first.click()
    download = info.value
    assert re.fullmatch(r"[0-9a-f]{32}\.dcm", download.suggested_filename)
    data = Path(download.path()).read_bytes()
    dataset = pydicom.dcmread(io.BytesIO(data))
    assert dataset.Modality == "CT"
    assert contains_phi(data) == []


def test_clinician_cannot_reach_admin_pages_and_auditor_cannot_see_images(
    page: Page, live: LiveServer
) -> None:
    sign_in(page, "clinician")
    response = page.goto("/portal/admin")
    assert response is not None and response.status == 403
    assert page.get_by_role("heading", name="Access denied").is_visible()
    screenshot(page, "forbidden")
    page.context.clear_cookies()
    sign_in(page, "auditor")
    response = page.goto(f"/portal/studies/{live.study_id}")
    assert response is not None and response.status == 403
    response = page.goto(f"/portal/images/{live.image_ids[0]}/thumbnail")
    assert response is not None and response.status == 403


def test_admin_dashboard_and_auditor_log_of_a_study(page: Page, live: LiveServer) -> None:
    sign_in(page, "admin")
    page.get_by_role("link", name="Admin").click()
    page.wait_for_url(re.compile(r"/portal/admin$"))
    assert page.get_by_role("heading", name="Encryption keys").is_visible()
    assert page.get_by_role("heading", name="Ingest pipeline").is_visible()
    screenshot(page, "admin")
    page.get_by_role("navigation", name="Administration").get_by_role("link", name="Users").click()
    assert page.locator("table.users-table").inner_text().count("1") >= 5
    screenshot(page, "admin-users")
    page.context.clear_cookies()

    sign_in(page, "auditor")
    page.get_by_label("Who looked at a study? Study id").fill(live.study_id)
    page.get_by_role("button", name="Show accesses").click()
    page.wait_for_url(re.compile(r"study-access\?study="))
    text = page.locator("table.audit-table").inner_text()
    assert "study.read" in text or "image.download" in text
    page.goto("/portal/audit")
    screenshot(page, "audit", full_page=False)
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    first_line = Path(info.value.path()).read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("id,time,actor_name,actor_id")


def test_sign_out_ends_the_session(page: Page, live: LiveServer) -> None:
    sign_in(page, "radiologist")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/portal/login\?signed_out=1"))
    assert page.get_by_text("You have signed out.").is_visible()
    page.goto("/portal/worklist")
    page.wait_for_url(re.compile(r"/portal/login\?next="))


def test_folders_and_dropped_zip_archives_upload_file_by_file(
    page: Page, live: LiveServer, tmp_path: Path
) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    folder = tmp_path / "exam"
    (folder / "series1").mkdir(parents=True)
    for i in range(2):
        ds = phantom_ct(
            patient_id="FOLDERPID01", study_uid=study_uid, series_uid=series_uid, index=i, slices=2
        )
        (folder / "series1" / f"IM{i}").write_bytes(to_bytes(ds))
    (folder / ".DS_Store").write_bytes(b"hidden")
    sign_in(page, "radiologist")
    page.goto("/portal/upload")
    page.locator("#folder-input").set_input_files(folder)
    page.wait_for_function("() => document.querySelectorAll('#upload-rows tr[data-status]').length === 2")
    table = page.locator("#upload-table").inner_text()
    assert "exam/series1/IM0" in table and ".DS_Store" not in table
    assert page.get_by_role("link", name="View study").count() == 2

    archive = io.BytesIO()
    zip_study, zip_series = generate_uid(), generate_uid()
    with zipfile.ZipFile(archive, "w") as zipped:
        for i in range(2):
            ds = phantom_ct(
                patient_id="ZIPPID01", study_uid=zip_study, series_uid=zip_series, index=i, slices=2
            )
            zipped.writestr(f"zip/IM{i}.dcm", to_bytes(ds))
    page.evaluate(
        """([bytes, name]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "application/zip" }));
            const zone = document.getElementById("drop-zone");
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        [list(archive.getvalue()), "archive.zip"],
    )
    page.wait_for_function("() => document.querySelectorAll('#upload-rows tr[data-status]').length === 3")
    row = page.locator("#upload-rows tr", has_text="archive.zip")
    assert "Archive with 2 objects" in row.inner_text()
    assert page.locator("[data-count=stored]").inner_text() == "4"


def test_pages_fit_a_tablet_without_sideways_scrolling(chromium: Browser, live: LiveServer) -> None:
    context = chromium.new_context(base_url=live.url, viewport={"width": 820, "height": 1180})
    context.set_default_timeout(10_000)
    tablet = context.new_page()
    try:
        sign_in(tablet, "admin")
        for path in (
            "/portal/worklist",
            f"/portal/studies/{live.study_id}",
            f"/portal/series/{live.series_id}",
            "/portal/upload",
            "/portal/admin",
            "/portal/admin/users",
            "/portal/audit",
        ):
            tablet.goto(path)
            overflow = tablet.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
            if path.startswith("/portal/series/"):
                wait_loaded(tablet, "/frames/0")
                screenshot(tablet, "tablet-viewer", full_page=False)
            if path == "/portal/worklist":
                screenshot(tablet, "tablet-worklist", full_page=False)
    finally:
        context.close()
