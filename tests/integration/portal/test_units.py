"""The portal's pure pieces: page arithmetic, form parsing, cookie signing, session store, metrics, CSV, rendering.

(No app and no database: these belong under tests/unit/portal/ once that folder exists.)
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from irmsia.domain.png import decode_png
from irmsia.errors import InvalidDicom, InvalidRequest, NotFound
from irmsia.portal.forms import date_or_none, date_range, day_bounds, number, safe_next, text_or_none
from irmsia.portal.paging import Pagination, page_number, reversed_window
from irmsia.portal.sessions import CookieSigner, SessionPolicy, SessionStore, tokens_match
from irmsia.portal.views.audit import csv_cell
from irmsia.portal.views.upload import outcome
from irmsia.portal.web import options_from
from irmsia.portal.windowing import render_window
from irmsia.usecases.auth import TokenPair
from irmsia.usecases.ingest import FileResult
from irmsia.usecases.jobs import mean_timings
from tests.conftest import FakeClock, make_settings
from tests.factories import make_ct, make_multiframe_us, to_bytes


def test_pagination_counts_pages_and_items() -> None:
    assert Pagination(1, 25, 0).pages == 1 and Pagination(1, 25, 0).first_item == 0
    middle = Pagination(2, 25, 60)
    assert (middle.pages, middle.has_previous, middle.has_next) == (3, True, True)
    assert (middle.first_item, middle.last_item) == (26, 50)
    assert Pagination(3, 25, 60).last_item == 60 and not Pagination(3, 25, 60).has_next


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("", 1), (" 3 ", 3), ("100000", 100000)])
def test_page_numbers_parse(value: str | None, expected: int) -> None:
    assert page_number(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "100001"])
def test_bad_page_numbers_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequest):
        page_number(value)


def test_reversed_window_reads_the_oldest_items_first() -> None:
    items = list(range(60))  # as served: index 0 is the newest
    pages = []
    for page in (1, 2, 3):
        offset, limit = reversed_window(len(items), page, 25)
        pages.append(list(reversed(items[offset : offset + limit])))
    assert pages[0] == list(range(59, 34, -1)) and pages[2] == list(range(9, -1, -1))
    assert sum(len(p) for p in pages) == 60
    assert reversed_window(60, 4, 25) == (0, 0)


def test_form_values_parse_or_fail_with_the_field_name() -> None:
    assert text_or_none("  ") is None and text_or_none(" a ") == "a"
    with pytest.raises(InvalidRequest):
        text_or_none("x" * 200)
    assert date_or_none("2024-01-05", "From") == date(2024, 1, 5)
    with pytest.raises(InvalidRequest, match="From must be a date"):
        date_or_none("05/01/2024", "From")
    with pytest.raises(InvalidRequest):
        date_range(date(2024, 2, 1), date(2024, 1, 1))
    assert number("-600", "center") == -600.0 and number("", "center") is None
    for bad in ("inf", "nan", "ten"):
        with pytest.raises(InvalidRequest):
            number(bad, "width")


def test_day_bounds_cover_whole_days_in_utc() -> None:
    since, until = day_bounds(date(2024, 1, 5), date(2024, 1, 6))
    assert since == datetime(2024, 1, 5, tzinfo=UTC) and until == datetime(2024, 1, 7, tzinfo=UTC)
    assert day_bounds(None, None) == (None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/portal/studies/abc?x=1", "/portal/studies/abc?x=1"),
        (None, "/portal/"),
        ("https://evil.example/portal/", "/portal/"),
        ("//evil.example/portal/", "/portal/"),
        ("/portal//evil.example", "/portal/"),
        ("/portal/\\evil", "/portal/"),
        ("/portal/\nx", "/portal/"),
        ("/api/v1/users", "/portal/"),
    ],
)
def test_safe_next_only_accepts_portal_paths(value: str | None, expected: str) -> None:
    assert safe_next(value, "/portal/") == expected


def test_cookie_signatures_detect_any_change() -> None:
    signer = CookieSigner(b"k" * 32, "session")
    signed = signer.sign("abc")
    assert signer.unsign(signed) == "abc"
    assert signer.unsign(signed[:-1] + ("A" if signed[-1] != "A" else "B")) is None
    assert signer.unsign("abd" + signed[3:]) is None
    assert signer.unsign(None) is None and signer.unsign("nodot") is None
    assert CookieSigner(b"j" * 32, "session").unsign(signed) is None  # another key
    assert CookieSigner(b"k" * 32, "other").unsign(signed) is None  # another purpose


def test_tokens_match_needs_two_equal_values() -> None:
    assert tokens_match("a", "a") and not tokens_match("a", "b")
    assert not tokens_match("", "") and not tokens_match(None, "a") and not tokens_match("a", None)


def _pair() -> TokenPair:
    return TokenPair(access_token="access", refresh_token="refresh", expires_in=900)


def test_session_store_expires_idle_and_old_sessions() -> None:
    clock = FakeClock()
    store = SessionStore(clock, SessionPolicy(idle=timedelta(minutes=30), lifetime=timedelta(hours=2)))
    session = store.create(_pair())
    assert session.access_expires == clock() + timedelta(seconds=900)
    clock.advance(minutes=29)
    assert store.get(session.id) is session
    clock.advance(minutes=31)
    assert store.get(session.id) is None and len(store) == 0
    busy = store.create(_pair())
    for _ in range(4):
        clock.advance(minutes=25)
        assert store.get(busy.id) is busy
    clock.advance(minutes=25)  # 125 minutes after creation: past the 2-hour lifetime
    assert store.get(busy.id) is None


def test_session_store_drops_the_oldest_beyond_its_capacity() -> None:
    store = SessionStore(FakeClock(), SessionPolicy(max_sessions=2))
    first, second, third = (store.create(_pair()) for _ in range(3))
    assert store.get(first.id) is None and store.get(second.id) is second and store.get(third.id) is third
    assert first.csrf_token != second.csrf_token and first.id != second.id


def test_flashes_are_taken_once() -> None:
    session = SessionStore(FakeClock(), SessionPolicy()).create(_pair())
    session.flash("success", "done")
    assert [(f.kind, f.text) for f in session.take_flashes()] == [("success", "done")]
    assert session.take_flashes() == []


def test_mean_timings_average_each_step_over_the_jobs_that_ran_it() -> None:
    means = mean_timings([{"validate": 2.0, "store": 10.0}, {"validate": 4.0}, {}])
    assert means == {"validate": 3.0, "store": 10.0}
    assert list(means) == ["validate", "store"]
    assert mean_timings([]) == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+x", "'+x"),
        ("-x", "'-x"),
        ("@x", "'@x"),
        ("plain", "plain"),
        (None, ""),
        ({"a": 1}, '{"a": 1}'),
    ],
)
def test_csv_cells_never_start_a_formula(value: object, expected: str) -> None:
    assert csv_cell(value) == expected


def test_upload_outcomes_name_positions_and_ids_only() -> None:
    rejected = FileResult(label="2/3", state="failed", error="not_dicom", detail="the payload is not DICOM")
    assert outcome(rejected) == {
        "part": "2/3",
        "status": "rejected",
        "reason": "not_dicom",
        "message": "the payload is not DICOM",
    }
    stored = FileResult(
        label="1",
        state="succeeded",
        result={
            "status": "stored",
            "message": "stored",
            "study_id": "s",
            "image_id": "i",
            "patient_pseudonym": "IRM-X",
            "frames": 1,
        },
    )
    assert outcome(stored) == {
        "part": "1",
        "status": "stored",
        "message": "stored",
        "study_id": "s",
        "image_id": "i",
        "patient_pseudonym": "IRM-X",
    }
    assert outcome(FileResult(label="1"))["status"] == "pending"


def test_render_window_applies_the_window_in_modality_units() -> None:
    ds = make_ct()
    ds.PixelData = (np.arange(64 * 64, dtype=np.int16).reshape(64, 64) % 2000).tobytes()
    blob = to_bytes(ds)
    auto = render_window(blob, 0, None)
    assert auto.window is not None and (auto.window.center, auto.window.width) == (40.0, 400.0)
    lung = render_window(blob, 0, (-600.0, 1500.0))
    assert lung.window is not None and lung.window.center == -600.0
    assert not np.array_equal(decode_png(auto.png), decode_png(lung.png))
    with pytest.raises(InvalidRequest):
        render_window(blob, 0, (0.0, 0.0))
    with pytest.raises(NotFound):
        render_window(blob, 1, None)
    with pytest.raises(InvalidDicom):
        render_window(b"not dicom", 0, None)


def test_render_window_reports_no_window_for_colour_images() -> None:
    rendered = render_window(to_bytes(make_multiframe_us(frames=2)), 1, (40.0, 400.0))
    assert rendered.window is None
    assert decode_png(rendered.png).shape == (32, 48, 3)


def test_portal_options_come_from_settings_with_defaults(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    assert options_from(settings) == (None, SessionPolicy())
    configured = SimpleNamespace(
        PORTAL_COOKIE_SECURE="always", PORTAL_SESSION_IDLE_MINUTES=5, PORTAL_SESSION_MAX_HOURS=1
    )
    secure, policy = options_from(configured)  # type: ignore[arg-type]
    assert secure is True
    assert (policy.idle, policy.lifetime) == (timedelta(minutes=5), timedelta(hours=1))
    assert options_from(SimpleNamespace(PORTAL_COOKIE_SECURE="never"))[0] is False  # type: ignore[arg-type]
