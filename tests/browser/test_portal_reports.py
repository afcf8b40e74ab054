"""AI findings and reports in a real headless Chromium: analyse, review, download, sign off.

The module's server runs the default ``builtin`` provider (offline image quality control),
so the findings are real measurements of the seeded phantom, different for each slice.
Screenshots go to test-artifacts/screenshots/ (study-ai, viewer-ai, study-signed,
report-signed, worklist-ai, report-clinician); docs/screenshots/ holds copies for the README.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pypdf import PdfReader

from tests.browser.conftest import SCREENSHOTS, LiveServer, needs_browser, screenshot, sign_in
from tests.factories import contains_phi
from tests.support import CLI_CTX

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, needs_browser]


def _thumbnails_loaded(page: Page) -> None:
    """Scroll the lazily loaded series thumbnails into view and wait for them, for full-page shots."""
    for image in page.locator(".series-thumb img").all():
        image.scroll_into_view_if_needed()
        image.evaluate("img => img.decode()")
    page.evaluate("() => window.scrollTo(0, 0)")


def _element_screenshot(page: Page, selector: str, name: str) -> Path:
    """A screenshot of one element, saved next to the page screenshots."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.locator(selector).screenshot(path=str(path))
    return path


def _wait_for_ai_image(page: Page, image_id: str) -> None:
    page.wait_for_function("id => document.getElementById('viewer').dataset.aiImage === id", arg=image_id)


def test_radiologist_analyses_reviews_downloads_and_signs_off(page: Page, live: LiveServer) -> None:
    sign_in(page, "radiologist")
    page.goto(f"/portal/studies/{live.study_id}")
    assert page.get_by_text("No image of this study has been analysed yet.").is_visible()
    page.get_by_role("button", name=re.compile(r"^Analyse")).click()
    page.wait_for_url(re.compile(rf"/portal/studies/{live.study_id}"))
    assert page.get_by_text("Analysed 3 images.").is_visible()
    results = page.locator(".ai-result")
    assert results.count() == 3
    assert page.locator(".ai-panel .ai-label").inner_text() == "AI-generated, not for clinical use"
    analyses = {a.image_id: a.result for a in live.container.analyze.latest_for_study(CLI_CTX, live.study_id)}
    first, second = (analyses[image_id] for image_id in live.image_ids[:2])
    first_panel = page.locator(f'.ai-result[data-image="{live.image_ids[0]}"]')
    for finding in first.findings:
        assert finding.description in first_panel.inner_text()
    assert f"Risk {first.risk_score}" in first_panel.inner_text()
    assert "Provider builtin" in first_panel.inner_text()
    status = page.locator(".report-status")
    assert status.get_attribute("data-status") == "preliminary"
    assert "PRELIMINARY — AI-GENERATED" in status.inner_text()
    report_id = page.locator(".report-facts dd").first.inner_text()
    assert re.fullmatch(r"R-[0-9a-f]{24}", report_id)
    _thumbnails_loaded(page)
    screenshot(page, "study-ai")

    # The viewer shows the findings of the image on screen, and follows the slice.
    page.get_by_role("link", name=re.compile("Open viewer")).first.click()
    page.wait_for_url(re.compile(r"/portal/series/"))
    _wait_for_ai_image(page, live.image_ids[0])
    side = page.locator("#ai-side")
    assert "AI-generated, not for clinical use" in side.inner_text()
    assert first.findings[0].description in side.inner_text()
    assert f"Risk {first.risk_score} / 100" in side.inner_text()
    page.locator("#viewer-canvas").focus()
    page.keyboard.press("ArrowDown")
    _wait_for_ai_image(page, live.image_ids[1])
    shown = side.inner_text()
    assert second.findings[0].description in shown
    described = {f.description for f in second.findings}
    only_first = [f.description for f in first.findings if f.description not in described]
    assert only_first and not [description for description in only_first if description in shown]
    assert page.locator("#ai-image").input_value() == live.image_ids[1]
    screenshot(page, "viewer-ai", full_page=False)

    # The PDF, named by the report id only.
    page.goto(f"/portal/studies/{live.study_id}")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF").click()
    download = info.value
    assert download.suggested_filename == f"{report_id}.pdf"
    pdf = Path(download.path()).read_bytes()
    assert pdf.startswith(b"%PDF")
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert report_id in re.sub(r"\s+", "", text) and "PRELIMINARY" in text
    assert contains_phi(pdf) == []

    # Edit, then sign: the clinician's diagnosis, one finding removed.
    page.get_by_text("Edit, then sign").click()
    page.locator("#edit-diagnosis").fill("Technically adequate phantom study")
    removed = page.locator("#edit-form select").first
    removed.select_option(label="remove from the report")
    page.get_by_role("button", name="Sign the edited report").click()
    page.wait_for_url(re.compile(rf"/portal/studies/{live.study_id}"))
    assert page.get_by_text(re.compile(r"^Report signed: FINAL — signed by radiologist1")).is_visible()
    status = page.locator(".report-status")
    assert status.get_attribute("data-status") == "final"
    assert "FINAL — signed by radiologist1" in status.inner_text()
    panel = page.locator(".report-panel")
    assert "Confirmed with edits" in panel.inner_text()
    assert "Technically adequate phantom study" in panel.inner_text()
    assert "removed (AI severity" in page.locator(".amendments").inner_text()
    assert page.locator("#confirm-form, #edit-form, #reject-form").count() == 0
    assert page.locator(".report-facts dd").first.inner_text() == report_id
    screenshot(page, "study-signed")
    _element_screenshot(page, ".report-panel", "report-signed")


def test_clinician_sees_the_report_and_downloads_but_no_sign_off_form(page: Page, live: LiveServer) -> None:
    if not live.container.analyze.for_study(CLI_CTX, live.older_study_id):
        live.container.analyze.analyze_study(CLI_CTX, live.older_study_id)
    sign_in(page, "clinician")
    page.goto("/portal/worklist?ai=analysed")
    row = page.locator(
        "table.worklist-table tbody tr", has=page.locator(f'a[href="/portal/studies/{live.older_study_id}"]')
    )
    assert "Analysed, awaiting sign-off" in row.inner_text()
    screenshot(page, "worklist-ai", full_page=False)
    page.goto(f"/portal/studies/{live.older_study_id}")
    assert page.locator(".report-status").get_attribute("data-status") == "preliminary"
    assert page.get_by_text("Awaiting sign-off by a radiologist.").is_visible()
    for name in ("Download PDF", "Download DICOM SR", "Download FHIR"):
        assert page.get_by_role("link", name=name).is_visible()
    assert page.locator("#signoff, #confirm-form, #edit-form, #reject-form").count() == 0
    assert page.get_by_role("button", name=re.compile("sign", re.IGNORECASE)).count() == 1  # "Sign out" only
    with page.expect_download() as info:
        page.get_by_role("link", name="Download FHIR").click()
    assert info.value.suggested_filename.endswith(".fhir.json")
    screenshot(page, "report-clinician")
