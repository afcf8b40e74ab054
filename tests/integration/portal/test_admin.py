"""The admin dashboard: accounts, jobs, quarantine review, system and key status, metrics."""

from __future__ import annotations

import re
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Literal

import pytest

from irmsia.ai.schema import AnalysisResult, Provenance, ResultError
from irmsia.bootstrap import Container
from irmsia.db.auditlog import AuditFilter
from irmsia.db.jobs import Job
from irmsia.errors import NotFound
from irmsia.pipeline.runner import Outcome
from irmsia.portal.pages import _size
from irmsia.usecases.analyze import latency_stats
from irmsia.usecases.ingest import IncomingFile
from tests.conftest import TEST_PASSWORD, FakeClock, count_rows
from tests.factories import make_ct, to_bytes
from tests.integration.portal.conftest import BrowserFactory, World, ingest
from tests.support import CLI_CTX

FLASH = re.compile(r'<div class="flash flash-(\w+)" role="\w+">(.*?)</div>', re.S)


def _flashes(html: str) -> list[tuple[str, str]]:
    return [(kind, text.strip()) for kind, text in FLASH.findall(html)]


def test_dashboard_shows_status_keys_metrics_and_failures(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    ingest(container, b"not a DICOM file at all" * 10)
    page = browser("admin").get("/portal/admin")
    assert page.status_code == 200
    text = page.text
    assert "database" in text and "storage" in text
    assert container.keys.current_key_id() in text
    assert re.search(r"Ingested, last hour</dt><dd>4</dd>", text)
    assert re.search(r"Failed, last 24 h</dt><dd class=\"alert-number\">1</dd>", text)
    assert "not_dicom" in text  # the failed job and its PHI-free reason
    assert "<td>validate</td>" in text and "<td>index</td>" in text  # mean step timings
    assert re.search(r'<p class="big-number">1</p>', text)  # one image in quarantine


def test_creating_an_account_shows_the_one_time_password_once(
    browser: BrowserFactory, container: Container
) -> None:
    admin = browser("admin")
    response = admin.post("/portal/admin/users", {"username": "Dr.Who", "role": "radiologist"})
    assert response.status_code == 303 and response.headers["location"] == "/portal/admin/users"
    page = admin.get("/portal/admin/users")
    [(kind, message)] = _flashes(page.text)
    assert kind == "success" and "Created the radiologist account dr.who." in message
    password = re.search(r"One-time password: (\S+) —", message)
    assert password is not None
    assert _flashes(admin.get("/portal/admin/users").text) == []
    newcomer = browser()
    assert newcomer.login("dr.who", password.group(1)).status_code == 303
    assert newcomer.get("/portal/worklist").headers["location"] == "/portal/password"


def test_account_errors_are_shown_on_the_page(browser: BrowserFactory) -> None:
    admin = browser("admin")
    admin.post("/portal/admin/users", {"username": "x", "role": "clinician"})
    [(kind, message)] = _flashes(admin.get("/portal/admin/users").text)
    assert kind == "error" and message.startswith("Account not created: username must be")
    admin.post("/portal/admin/users", {"username": "admin1", "role": "clinician"})
    [(kind, message)] = _flashes(admin.get("/portal/admin/users").text)
    assert kind == "error" and "already exists" in message


def test_disable_enable_role_and_reset(browser: BrowserFactory, container: Container) -> None:
    admin = browser("admin")
    target = container.accounts.create(CLI_CTX, "target1", "clinician", TEST_PASSWORD).user.id
    admin.post(f"/portal/admin/users/{target}/disable")
    assert container.accounts.get(CLI_CTX, target).disabled
    admin.post(f"/portal/admin/users/{target}/enable")
    assert not container.accounts.get(CLI_CTX, target).disabled
    admin.post(f"/portal/admin/users/{target}/role", {"role": "auditor"})
    assert container.accounts.get(CLI_CTX, target).role == "auditor"
    admin.post(f"/portal/admin/users/{target}/reset-password")
    flashes = _flashes(admin.get("/portal/admin/users").text)
    assert [kind for kind, _ in flashes] == ["success"] * 4
    assert "New one-time password for target1" in flashes[-1][1]
    assert container.accounts.get(CLI_CTX, target).must_change_password


def test_the_last_admin_cannot_be_disabled(browser: BrowserFactory, container: Container) -> None:
    admin = browser("admin")
    own_id = container.accounts.by_username("admin1").id
    admin.post(f"/portal/admin/users/{own_id}/disable")
    [(kind, message)] = _flashes(admin.get("/portal/admin/users").text)
    assert kind == "error" and "last active admin" in message
    assert not container.accounts.get(CLI_CTX, own_id).disabled


def test_unknown_account_is_a_404_page(browser: BrowserFactory) -> None:
    response = browser("admin").post("/portal/admin/users/0123/disable")
    assert response.status_code == 404 and "Not found" in response.text


def test_jobs_page_filters_by_state_and_shows_failures(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    ingest(container, b"garbage" * 50)
    admin = browser("admin")
    failed = admin.get("/portal/admin/jobs?state=failed")
    assert "Showing 1\N{EN DASH}1 of 1 jobs" in failed.text and "not_dicom" in failed.text
    everything = admin.get("/portal/admin/jobs")
    assert "of 5 jobs" in everything.text
    assert admin.get("/portal/admin/jobs?state=exploded").status_code == 400


def test_quarantine_review_releases_or_deletes(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    admin = browser("admin")
    page = admin.get("/portal/admin/quarantine")
    assert f"/portal/images/{world.quarantined_id}/thumbnail" in page.text
    assert admin.get(f"/portal/images/{world.quarantined_id}/thumbnail").status_code == 200
    assert admin.post(f"/portal/admin/quarantine/{world.quarantined_id}/release").status_code == 303
    assert container.retrieve.image(CLI_CTX, world.quarantined_id).status == "stored"
    admin.post(f"/portal/admin/quarantine/{world.quarantined_id}/release")
    assert ("error", "the image is not in quarantine") in _flashes(admin.get("/portal/admin/quarantine").text)

    second = ingest(container, to_bytes(make_ct()))  # stored: used here as a stand-in image to delete
    admin.post(f"/portal/admin/quarantine/{second[0]['image_id']}/delete")
    with pytest.raises(NotFound):
        container.retrieve.image(CLI_CTX, second[0]["image_id"])


def test_metrics_count_only_the_last_hour(browser: BrowserFactory, world: World, clock: FakeClock) -> None:
    clock.advance(minutes=61)
    page = browser("admin").get("/portal/admin")
    assert re.search(r"Ingested, last hour</dt><dd>0</dd>", page.text)


# --- storage, ledger and AI status -----------------------------------------------------


def _ledger_size(container: Container) -> int:
    with container.sessions() as session:
        return container.ledger.ledger.size(session)


def _dd(text: str, term: str) -> str:
    """The value shown next to a term of a facts list or metrics card, tags stripped."""
    found = re.search(rf"<dt>{re.escape(term)}</dt><dd[^>]*>(.*?)</dd>", text, re.S)
    assert found is not None, f"no {term!r} on the page"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def test_dashboard_shows_storage_by_kind_as_the_blob_store_holds_it(
    browser: BrowserFactory, world: World, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_store(container, monkeypatch)
    _submit(container, to_bytes(make_ct()))  # fails at store, keeps its input
    container.ingest.executor = _Paused()
    container.ingest.submit(CLI_CTX, [IncomingFile(data=[to_bytes(make_ct())], label="1")], wait=False)
    text = browser("admin").get("/portal/admin").text
    assert _dd(text, "Backend") == "filesystem"
    # The bytes are what the blob store really holds under objects/, summed independently of
    # the index (an instance's objects fill its blob exactly); three objects per instance.
    keys = [key for key in container.blobs.list("objects/")]
    sizes = sum(container.blobs.size(key) for key in keys)
    assert len(keys) == 4 and count_rows(container, "stored_objects") == 3 * 4
    assert _dd(text, "Stored objects") == f"{3 * 4} ({_size(sizes)})"
    rows = dict(re.findall(r"<tr><td>(\w+)</td><td class=\"num\">(\d+)</td>", text))
    assert rows["dicom"] == "4" and rows["thumbnail"] == "4"  # three stored images and the quarantined one
    assert _dd(text, "Spool, waiting") == "1"
    assert _dd(text, "Spool, kept for retry") == "1"
    assert re.search(r'<p class="big-number">1</p>', text)  # the quarantined image


def test_dashboard_shows_ledger_status_and_a_get_neither_grows_nor_signs(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    admin = browser("admin")
    admin.get("/portal/admin")  # the first view, before any checkpoint exists
    size, events = _ledger_size(container), count_rows(container, "audit_events")
    text = admin.get("/portal/admin").text
    assert _ledger_size(container) == size  # nothing appended: no audit record, no entry
    assert count_rows(container, "audit_events") == events
    assert count_rows(container, "ledger_checkpoints") == 0  # and no checkpoint signed
    assert _dd(text, "Entries") == str(size)
    assert _dd(text, "Latest checkpoint") == "none signed yet"
    assert _dd(text, "Not yet signed") == str(size)
    assert _dd(text, "Last verification") == "never run"
    assert re.search(r"<td>mock</td>\s*<td><span class=\"muted\">not published yet</span>", text)

    records = container.ledger.anchoring.publish(CLI_CTX)  # signs a checkpoint, then anchors it
    report = container.ledger.verification.run(CLI_CTX)
    assert report.ok
    text = admin.get("/portal/admin").text
    signed = records[0].checkpoint_size
    assert _dd(text, "Latest checkpoint").startswith(f"{signed} entries, signed ")
    assert _dd(text, "Not yet signed") == str(_ledger_size(container) - signed)
    verification = _dd(text, "Last verification")
    objects = count_rows(container, "stored_objects")
    assert verification.startswith("ok ") and f"(all, api, {objects} objects)" in verification
    assert re.search(
        rf"<td>mock</td>\s*<td>.*?anchored.*?</td>\s*<td class=\"num\">{signed}</td>", text, re.S
    )
    assert records[0].reference and records[0].reference in text
    assert count_rows(container, "ledger_checkpoints") == 1


def test_dashboard_shows_a_verification_with_mismatches(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    # Tamper with one stored blob: the next verification finds it.
    key = next(iter(container.blobs.list("objects/")))
    container.blobs.put(key, b"tampered" + container.blobs.get(key)[8:])
    report = container.ledger.verification.run(CLI_CTX)
    assert not report.ok and report.mismatch_count >= 1
    text = browser("admin").get("/portal/admin").text
    noun = "mismatch" if report.mismatch_count == 1 else "mismatches"
    assert _dd(text, "Last verification").startswith(f"{report.mismatch_count} {noun} ")


def _result(seconds: float, *, status: Literal["ok", "error"] = "ok") -> AnalysisResult:
    provenance = Provenance(provider="test", model="test-model", version="1")
    return AnalysisResult(
        status=status,
        error=ResultError(code="timeout", message="the provider did not answer in time")
        if status == "error"
        else None,
        model_used="test-model",
        provenance=provenance,
        processing_time=seconds,
        timestamp=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    )


def test_dashboard_shows_ai_latency_of_the_last_day(
    browser: BrowserFactory, world: World, container: Container, clock: FakeClock
) -> None:
    image = world.image_ids[0]
    container.analyze.store(CLI_CTX, image, _result(500.0))  # more than a day old by the time of the view
    clock.advance(hours=25)
    for seconds in range(1, 20):
        container.analyze.store(CLI_CTX, image, _result(float(seconds)))
    container.analyze.store(CLI_CTX, image, _result(20.0, status="error"))
    text = browser("admin").get("/portal/admin").text
    assert _dd(text, "Analyses") == "20"
    assert _dd(text, "Errors") == "1"
    assert _dd(text, "Mean latency") == "10.50 s"  # mean of 1..20
    assert _dd(text, "95th percentile") == "19.00 s"  # nearest rank: the 19th of 20


def test_dashboard_without_analyses_says_so(browser: BrowserFactory, container: Container) -> None:
    text = browser("admin").get("/portal/admin").text
    assert "No analysis in the last 24 hours." in text
    assert "Nothing stored yet." in text


def test_latency_stats_are_the_mean_and_the_nearest_rank_95th_percentile() -> None:
    assert latency_stats([]) == (None, None)
    assert latency_stats([2.0]) == (2.0, 2.0)
    mean, p95 = latency_stats([float(n) for n in range(100, 0, -1)])
    assert mean == 50.5 and p95 == 95.0


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")],
)
def test_sizes_are_shown_in_binary_units(value: int, shown: str) -> None:
    assert _size(value) == shown


# --- retrying and discarding failed jobs ---------------------------------------------------


class _Paused:
    """An executor that accepts jobs and runs none (a busy server)."""

    def submit(self, job_id: str, payload: bytes | None = None, size: int = 0) -> Future[Outcome]:
        return Future()

    def close(self) -> None:
        pass


def _fail_store(container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store step fail as a broken disk would: not the input's fault."""

    def broken_store(state: object) -> None:
        raise ValueError("the disk is gone")

    monkeypatch.setattr(container.pipeline, "store", broken_store)


def _submit(container: Container, blob: bytes) -> str:
    """Queue one object through the spool (as an upload that does not wait does); the inline
    executor runs it at once. Only spooled jobs keep their input when they fail."""
    [item] = container.ingest.submit(CLI_CTX, [IncomingFile(data=[blob], label="1")], wait=False).files
    assert item.job_id is not None
    return item.job_id


def _job(container: Container, job_id: str) -> Job:
    with container.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_failed_jobs_show_the_step_and_reason_with_retry_and_discard(
    browser: BrowserFactory, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_store(container, monkeypatch)
    kept = _submit(container, to_bytes(make_ct()))
    monkeypatch.undo()
    rejected = _submit(container, b"junk" * 40)
    page = browser("admin").get("/portal/admin/jobs?state=failed").text
    assert "not available yet" not in page
    row = _row(page, kept)
    assert "failed at store:" in row and "internal_error" in row
    assert f"/portal/admin/jobs/{kept}/retry" in row and f"/portal/admin/jobs/{kept}/discard" in row
    assert 'name="back" value="/portal/admin/jobs?state=failed"' in row
    row = _row(page, rejected)
    assert "failed at validate:" in row and "not_dicom" in row
    assert "/retry" not in row and "input not kept; upload the file again" in row


def _row(html: str, job_id: str) -> str:
    found = re.search(rf'<tr data-job="{job_id}">(.*?)</tr>', html, re.S)
    assert found is not None, f"job {job_id} is not listed"
    return found.group(1)


def test_an_admin_retries_a_failed_job_and_it_succeeds(
    browser: BrowserFactory, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_store(container, monkeypatch)
    job_id = _submit(container, to_bytes(make_ct()))
    assert _job(container, job_id).step == "store"
    monkeypatch.undo()  # the cause is fixed
    admin = browser("admin")
    response = admin.post(f"/portal/admin/jobs/{job_id}/retry", {"back": "/portal/admin/jobs?state=failed"})
    assert response.status_code == 303 and response.headers["location"] == "/portal/admin/jobs?state=failed"
    job = _job(container, job_id)
    assert job.state == "succeeded" and job.step is None and job.error_code is None and job.attempt == 1
    assert count_rows(container, "instances") == 1
    assert not list(container.blobs.list("spool/"))
    [(kind, message)] = _flashes(admin.get("/portal/admin/jobs").text)
    assert kind == "success" and f"Job {job_id} was queued again; it is now succeeded." == message
    [event] = container.audit.search(CLI_CTX, AuditFilter(action="job.retry")).items
    assert (event.actor_name, event.resource_type, event.resource_id) == ("admin1", "job", job_id)
    assert event.as_dict()["detail"] == {"step": "store", "error_code": "internal_error"}
    # Succeeded now: a second retry is refused with the reason, and the refusal is audited.
    admin.post(f"/portal/admin/jobs/{job_id}/retry")
    [(kind, message)] = _flashes(admin.get("/portal/admin/jobs").text)
    assert kind == "error" and message == f"Job {job_id} not retried: the job is succeeded, not failed"
    refused = container.audit.search(CLI_CTX, AuditFilter(action="job.retry", outcome="failure")).items
    assert [e.as_dict()["detail"] for e in refused] == [{"reason": "not_failed"}]


def test_a_retry_that_fails_again_says_where(
    browser: BrowserFactory, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_store(container, monkeypatch)
    job_id = _submit(container, to_bytes(make_ct()))
    admin = browser("admin")
    admin.post(f"/portal/admin/jobs/{job_id}/retry")  # not fixed yet
    [(kind, message)] = _flashes(admin.get("/portal/admin/jobs").text)
    assert (
        kind == "error" and message == f"Job {job_id} was retried and failed again at store: internal_error."
    )
    assert _job(container, job_id).spool_key is not None  # still kept for the next try


def test_an_admin_discards_a_failed_jobs_input(
    browser: BrowserFactory, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_store(container, monkeypatch)
    job_id = _submit(container, to_bytes(make_ct()))
    assert len(list(container.blobs.list("spool/"))) == 1
    admin = browser("admin")
    assert admin.post(f"/portal/admin/jobs/{job_id}/discard").status_code == 303
    assert list(container.blobs.list("spool/")) == []
    assert _job(container, job_id).state == "failed" and _job(container, job_id).spool_key is None
    [(kind, message)] = _flashes(admin.get("/portal/admin/jobs").text)
    assert kind == "success" and "cannot be retried" in message
    page = admin.get("/portal/admin/jobs?state=failed").text
    assert "/retry" not in _row(page, job_id)
    admin.post(f"/portal/admin/jobs/{job_id}/retry")
    [(kind, message)] = _flashes(admin.get("/portal/admin/jobs").text)
    assert kind == "error" and "upload the file again" in message
    actions = [e.action for e in container.audit.search(CLI_CTX, AuditFilter(resource_id=job_id)).items]
    assert actions == ["job.retry", "job.discard"]  # newest first: the refused retry, the discard


def test_job_actions_on_unknown_jobs_are_404_pages(browser: BrowserFactory) -> None:
    admin = browser("admin")
    assert admin.post("/portal/admin/jobs/0123/retry").status_code == 404
    assert admin.post("/portal/admin/jobs/0123/discard").status_code == 404


def test_job_actions_go_back_only_to_the_jobs_page(browser: BrowserFactory, container: Container) -> None:
    job_id = _submit(container, to_bytes(make_ct()))
    admin = browser("admin")
    for back, expected in [
        ("/portal/admin/jobs?state=failed&page=2", "/portal/admin/jobs?state=failed&page=2"),
        ("https://evil.example/", "/portal/admin/jobs"),
        ("/portal/admin/jobs//evil.example", "/portal/admin/jobs"),
        ("/portal/worklist", "/portal/admin/jobs"),
    ]:
        response = admin.post(f"/portal/admin/jobs/{job_id}/discard", {"back": back})
        assert response.status_code == 303 and response.headers["location"] == expected
