"""The report model: validation, sign-off consistency, canonical JSON and its digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from irmsia.errors import InvalidRequest
from irmsia.reports.model import (
    REPORT_SCHEMA,
    Finding,
    Report,
    ReportStatus,
    Severity,
    SignOff,
    SignOffAction,
    parse_report,
    status_banner,
)
from tests.factories import PHI
from tests.unit.reports.conftest import CREATED, EDITED, NARRATIVE, SIGNED, sign_off

MakeReport = Callable[..., Report]


def test_canonical_json_is_sorted_compact_utf8_of_the_content(preliminary: Report) -> None:
    data = preliminary.canonical_json()
    assert data == json.dumps(
        preliminary.content(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert json.loads(data)["schema"] == REPORT_SCHEMA
    assert "Ελληνικά".encode() in data


def test_content_sha256_is_the_digest_of_the_canonical_bytes(preliminary: Report) -> None:
    assert preliminary.content_sha256() == hashlib.sha256(preliminary.canonical_json()).hexdigest()


def test_same_content_gives_same_digest_whatever_the_ledger_fields(preliminary: Report) -> None:
    registered = preliminary.model_copy(update={"ledger_hash": "ab" * 32, "ledger_index": 3})
    assert registered.canonical_json() == preliminary.canonical_json()
    assert "ledger_hash" not in registered.content()


def test_signing_changes_the_digest(make_report: MakeReport) -> None:
    preliminary = make_report(1)
    final = preliminary.model_copy(
        update={"status": ReportStatus.FINAL, "sign_off": sign_off(SignOffAction.CONFIRMED)}
    )
    assert final.content_sha256() != preliminary.content_sha256()


def test_thumbnails_are_bound_by_digest_not_embedded(preliminary: Report) -> None:
    image = preliminary.content()["images"][0]
    assert "thumbnail_png" not in image
    assert preliminary.images[0].thumbnail_png is not None
    assert image["thumbnail_sha256"] == hashlib.sha256(preliminary.images[0].thumbnail_png).hexdigest()


def test_times_are_normalised_to_utc(make_report: MakeReport) -> None:
    shifted = CREATED.astimezone(timezone(timedelta(hours=2)))
    utc = make_report(1)
    local = make_report(1, created_at=shifted)
    assert local.created_at == utc.created_at
    assert local.created_at.utcoffset() == timedelta(0)
    assert json.loads(local.canonical_json())["created_at"] == "2026-03-01T09:00:00Z"


def test_text_is_stripped_so_each_text_has_one_spelling() -> None:
    finding = Finding(description="  Focal opacity \n", confidence=0.5, severity=Severity.LOW)
    assert finding.description == "Focal opacity"


def test_naive_times_are_refused(make_report: MakeReport) -> None:
    with pytest.raises(ValidationError):
        make_report(1, created_at=datetime(2026, 3, 1, 9, 0))


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (ReportStatus.FINAL, None),
        (ReportStatus.REJECTED, None),
        (ReportStatus.PRELIMINARY, SignOffAction.CONFIRMED),
        (ReportStatus.FINAL, SignOffAction.REJECTED),
        (ReportStatus.REJECTED, SignOffAction.EDITED),
    ],
)
def test_status_must_agree_with_the_sign_off(
    make_report: MakeReport, status: ReportStatus, action: SignOffAction | None
) -> None:
    with pytest.raises(ValidationError):
        make_report(1, status=status, sign_off=sign_off(action) if action else None)


def test_edited_sign_off_needs_the_edited_narrative() -> None:
    with pytest.raises(ValidationError):
        SignOff(user_id="u-1", username="dr.who", signed_at=SIGNED, action=SignOffAction.EDITED)
    with pytest.raises(ValidationError):
        SignOff(
            user_id="u-1",
            username="dr.who",
            signed_at=SIGNED,
            action=SignOffAction.CONFIRMED,
            edited_narrative="text",
        )


@pytest.mark.parametrize("confidence", [-0.01, 1.01, float("nan"), float("inf")])
def test_confidence_outside_zero_to_one_is_refused(confidence: float) -> None:
    with pytest.raises(ValidationError):
        Finding(description="x", confidence=confidence, severity=Severity.LOW)


@pytest.mark.parametrize(
    "update",
    [
        {"risk_score": 100.5},
        {"probabilities": {"pneumonia": 1.5}},
        {"sop_instance_uid": "1.2.03"},
        {"sop_instance_uid": "1." + "2" * 70},
        {"series_instance_uid": "not-a-uid"},
        {"thumbnail_png": b"GIF89a not a png"},
        {"image_id": "has spaces"},
    ],
)
def test_unusable_image_results_are_refused(preliminary: Report, update: dict[str, object]) -> None:
    data = preliminary.images[0].model_dump() | update
    with pytest.raises(ValidationError):
        type(preliminary.images[0]).model_validate(data)


@pytest.mark.parametrize(
    "update",
    [
        {"accession_pseudonym": "A-" + "X" * 15},
        {"modalities": ("ct",)},
        {"study_instance_uid": "2.25.01"},
        {"study_id": ""},
    ],
)
def test_unusable_study_attributes_are_refused(preliminary: Report, update: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        type(preliminary.study).model_validate(preliminary.study.model_dump() | update)


def test_duplicate_image_ids_are_refused(preliminary: Report) -> None:
    with pytest.raises(ValidationError):
        preliminary.model_validate(
            preliminary.model_dump() | {"images": [preliminary.images[0], preliminary.images[0]]}
        )


def test_json_round_trip_keeps_every_field(final: Report) -> None:
    assert parse_report(final.to_json()) == final
    assert parse_report(final.model_dump()) == final


def test_parse_report_raises_invalid_request_naming_fields_not_values(preliminary: Report) -> None:
    data = preliminary.model_dump(mode="json")
    data["report_id"] = PHI["PatientName"]
    data["study"]["study_instance_uid"] = PHI["PatientID"]
    data[PHI["OtherPatientIDs"]] = 1
    with pytest.raises(InvalidRequest) as caught:
        parse_report(data)
    message = str(caught.value)
    assert "report_id" in message
    assert "study.study_instance_uid" in message
    for value in (PHI["PatientName"], PHI["PatientID"], PHI["OtherPatientIDs"]):
        assert value not in message
    assert caught.value.__cause__ is None


def test_validation_errors_do_not_echo_input(preliminary: Report) -> None:
    data = preliminary.model_dump() | {"patient_pseudonym": PHI["PatientName"]}
    with pytest.raises(ValidationError) as caught:
        Report.model_validate(data)
    assert PHI["PatientName"] not in str(caught.value)


def test_parse_report_refuses_malformed_json() -> None:
    with pytest.raises(InvalidRequest):
        parse_report(b"{not json")


def test_conclusion_is_the_edited_narrative_once_edited(preliminary: Report, edited: Report) -> None:
    assert edited.conclusion == EDITED
    assert preliminary.conclusion == f"{NARRATIVE}\n\n{NARRATIVE}"


def test_status_banner_follows_the_sign_off(preliminary: Report, final: Report, rejected: Report) -> None:
    assert status_banner(preliminary) == "PRELIMINARY — AI-GENERATED, NOT FOR CLINICAL USE"
    assert status_banner(final) == "FINAL — signed by dr.house on 2026-03-02 14:30 UTC"
    assert status_banner(rejected) == "REJECTED — by dr.house on 2026-03-02 14:30 UTC"
