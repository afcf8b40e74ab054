"""The result schema: validation, canonical JSON for hashing, severity and risk helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from irmsia.ai.schema import (
    DISCLAIMER,
    AnalysisResult,
    Finding,
    Provenance,
    ResultError,
    Severity,
    risk_from_findings,
    worst_severity,
)

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _result(**overrides: Any) -> AnalysisResult:
    fields: dict[str, Any] = {
        "status": "ok",
        "findings": [Finding(description="d", confidence=0.5, severity=Severity.LOW)],
        "risk_score": 10,
        "model_used": "m",
        "provenance": Provenance(provider="builtin", model="m", version="1"),
        "processing_time": 0.25,
        "timestamp": NOW,
        "label_probabilities": {"b": 0.2, "a": None},
    }
    fields.update(overrides)
    return AnalysisResult(**fields)


def test_canonical_json_has_sorted_keys_and_no_whitespace() -> None:
    data = _result().canonical_json()

    decoded = json.loads(data)
    assert data == json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert decoded["ai_generated"] is True and decoded["disclaimer"] == DISCLAIMER
    assert decoded["label_probabilities"] == {"a": None, "b": 0.2}


def test_the_same_content_hashes_the_same_and_different_content_differently() -> None:
    first, again = _result(), _result()
    other = _result(risk_score=11)

    assert first.sha256() == again.sha256()
    assert first.sha256() != other.sha256()
    assert AnalysisResult.model_validate_json(first.canonical_json()).sha256() == first.sha256()


def test_the_same_instant_in_another_timezone_hashes_the_same() -> None:
    shifted = _result(timestamp=NOW.astimezone(timezone(timedelta(hours=2))))

    assert shifted.timestamp.utcoffset() == timedelta(0)
    assert shifted.sha256() == _result().sha256()


@pytest.mark.parametrize(
    "overrides",
    [
        {"risk_score": 101},
        {"confidence": 1.5},
        {"processing_time": -1.0},
        {"label_probabilities": {"x": 2.0}},
        {"label_probabilities": {"": 0.5}},
        {"timestamp": datetime(2026, 3, 1, 9, 0)},
        {"ai_generated": False},
        {"disclaimer": "trust me"},
        {"status": "error"},
        {"error": ResultError(code="ai_error", message="x")},
        {"unexpected": 1},
    ],
)
def test_invalid_results_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _result(**overrides)


def test_findings_reject_out_of_range_confidence_and_nan() -> None:
    with pytest.raises(ValidationError):
        Finding(description="d", confidence=1.2, severity=Severity.LOW)
    with pytest.raises(ValidationError):
        Finding(description="d", confidence=float("nan"), severity=Severity.LOW)
    with pytest.raises(ValidationError):
        Finding(description="", confidence=0.5, severity=Severity.LOW)


def test_an_error_result_carries_no_findings() -> None:
    result = _result(status="error", findings=[], error=ResultError(code="service_timeout", message="late"))

    assert result.error is not None and result.error.code == "service_timeout"


def test_severity_helpers() -> None:
    low = Finding(description="a", confidence=1.0, severity=Severity.LOW)
    critical = Finding(description="b", confidence=1.0, severity=Severity.CRITICAL)
    normal = Finding(description="c", confidence=1.0, severity=Severity.NORMAL)

    assert worst_severity([low, critical, normal]) is Severity.CRITICAL
    assert worst_severity([]) is Severity.NORMAL
    assert risk_from_findings([normal]) == 0
    assert risk_from_findings([critical]) == 95
    assert risk_from_findings([low, low]) > risk_from_findings([low])
