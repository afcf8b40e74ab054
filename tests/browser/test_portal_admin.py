"""The admin dashboard and jobs page, and the auditor's patient filter, in a real headless Chromium."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from irmsia.db.jobs import Job
from irmsia.usecases.ingest import IncomingFile
from tests.browser.conftest import LiveServer, needs_browser, screenshot, sign_in
from tests.factories import make_ct, to_bytes
from tests.support import CLI_CTX

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, needs_browser]


def _job(live: LiveServer, job_id: str) -> Job:
    with live.container.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _failed_job(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A job that failed at its store step (a broken disk, not the input) and kept its input."""

    def broken_store(state: object) -> None:
        raise ValueError("the disk is gone")

    with monkeypatch.context() as patched:
        patched.setattr(live.container.pipeline, "store", broken_store)
        [item] = live.container.ingest.submit(
            CLI_CTX,
            [IncomingFile(data=[to_bytes(make_ct(patient_id="BROWSERJOB02"))], label="1")],
            wait=False,
        ).files
    assert item.job_id is not None
    job = _job(live, item.job_id)
    assert (job.state, job.step, job.spool_key is not None) == ("failed", "store", True)
    return item.job_id


def test_admin_sees_the_dashboard_and_retries_a_failed_job(
    page: Page, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _failed_job(live, monkeypatch)
    live.container.ledger.anchoring.publish(CLI_CTX)  # a signed, anchored checkpoint to show
    live.container.ledger.verification.run(CLI_CTX)
    sign_in(page, "admin")
    page.goto("/portal/admin")
    for heading in ("Storage", "Encryption keys", "Ledger", "AI analysis, last 24 h", "Recent failed jobs"):
        assert page.get_by_role("heading", name=heading).is_visible(), heading
    ledger = page.locator("section[aria-labelledby=ledger-title]").text_content() or ""
    assert "Latest checkpoint" in ledger and "anchored" in ledger and "ok" in ledger
    failed = page.locator("section[aria-labelledby=failed-title]").inner_text()
    assert job_id in failed and "internal_error" in failed
    screenshot(page, "admin-dashboard")

    page.get_by_role("link", name="retry or discard").first.click()
    page.wait_for_url(re.compile(r"/portal/admin/jobs\?state=failed$"))
    row = page.locator(f"tr[data-job='{job_id}']")
    assert "failed at store:" in row.inner_text()
    screenshot(page, "admin-jobs")
    row.get_by_role("button", name=f"Retry job {job_id}").click()
    page.wait_for_url(re.compile(r"/portal/admin/jobs\?state=failed$"))
    assert (
        f"Job {job_id} was queued again; it is now succeeded." in page.locator(".flash-success").inner_text()
    )
    assert page.locator(f"tr[data-job='{job_id}']").count() == 0  # no longer among the failed jobs
    job = _job(live, job_id)
    assert (job.state, job.step, job.spool_key) == ("succeeded", None, None)


def test_auditor_filters_the_log_by_patient_pseudonym(page: Page, live: LiveServer) -> None:
    [other] = live.container.ingest.submit(
        CLI_CTX, [IncomingFile(data=[to_bytes(make_ct(patient_id="BROWSEROTHER03"))], label="1")]
    ).files
    other_study = other.result["study_id"]
    sign_in(page, "clinician")
    page.goto(f"/portal/studies/{live.study_id}")
    page.goto(f"/portal/studies/{other_study}")
    page.context.clear_cookies()

    sign_in(page, "auditor")
    page.get_by_label("Patient pseudonym").fill(live.pseudonym)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(rf"patient={live.pseudonym}"))
    table = page.locator("table.audit-table").inner_text()
    assert "study.read" in table and "clinician1" in table and "ingest.store" in table
    assert other_study not in table and other.result["image_id"] not in table
    screenshot(page, "audit-patient", full_page=False)

    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8"))))
    reads = [row for row in rows if row["action"] == "study.read" and row["actor_name"] == "clinician1"]
    assert [row["resource_id"] for row in reads] == [live.study_id]
    assert all(other_study != row["resource_id"] for row in rows)
