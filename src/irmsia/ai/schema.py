"""The AI analysis result: one validated, hashable record for every provider.

``AnalysisResult`` is what the runner returns and what the API, the reports and the ledger see.
Every result is labelled AI-generated with a fixed disclaimer, names the provider, model, version
and weights digest that produced it (``provenance``), and says whether it was simulated (only
the ``mock`` provider). A provider failure is a result too: ``status`` "error" with an ``error``
code and a message free of patient data, no findings.

``canonical_json()`` gives sorted-key, compact UTF-8 JSON (no NaN): the same bytes for the same
content, so the ledger can register ``sha256()`` of a result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION: Literal["1"] = "1"
DISCLAIMER = "AI-generated, not for clinical use. Must be reviewed by a qualified professional."


class Severity(StrEnum):
    """How much a finding matters, from ``normal`` (nothing wrong) to ``critical``."""

    NORMAL = "normal"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITY_ORDER: dict[Severity, int] = {severity: rank for rank, severity in enumerate(Severity)}
# Risk contributed by one finding of each severity (see risk_from_findings).
_SEVERITY_RISK: dict[Severity, float] = {
    Severity.NORMAL: 0.0,
    Severity.LOW: 0.15,
    Severity.MODERATE: 0.4,
    Severity.HIGH: 0.7,
    Severity.CRITICAL: 0.95,
}

_STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Finding(BaseModel):
    """One statement about the image.

    ``confidence`` is in 0..1. ``code`` is a stable machine-readable token (``qc.noise``,
    ``label.effusion``); ``value`` and ``unit`` carry the measured number when there is one.
    """

    model_config = _STRICT

    description: str = Field(min_length=1, max_length=500)
    location: str | None = Field(None, max_length=200)
    confidence: float = Field(ge=0.0, le=1.0)
    severity: Severity
    code: str | None = Field(None, pattern=r"^[a-z0-9_.\-]{1,64}$")
    value: float | None = None
    unit: str | None = Field(None, max_length=32)


class Provenance(BaseModel):
    """Which provider, model, version and weights file (SHA-256, hex) produced a result."""

    model_config = _STRICT

    provider: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=64)
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class ResultError(BaseModel):
    """Why a result has no findings: a stable ``code`` and a message without patient data."""

    model_config = _STRICT

    code: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    message: str = Field(min_length=1, max_length=500)


class AnalysisResult(BaseModel):
    """An AI analysis of one image, or the reason there is none (``status`` "error").

    ``risk_score`` is 0..100 and ``processing_time`` in seconds. ``label_probabilities`` maps
    each label of a classifier to its probability in 0..1, or to None where the model's weights
    do not cover that label (not available). ``report_provenance`` names the language model
    that wrote ``report_text`` when a report writer was chained after the vision provider.
    ``timestamp`` must be timezone-aware and is kept in UTC.
    """

    model_config = _STRICT

    schema_version: Literal["1"] = SCHEMA_VERSION
    status: Literal["ok", "error"]
    error: ResultError | None = None
    findings: list[Finding] = Field(default_factory=list)
    risk_score: int | None = Field(None, ge=0, le=100)
    suggested_diagnosis: str | None = Field(None, max_length=500)
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    label_probabilities: dict[str, float | None] = Field(default_factory=dict)
    report_text: str | None = Field(None, max_length=20_000)
    report_provenance: Provenance | None = None
    recommendations: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(default_factory=list)
    model_used: str = Field(min_length=1, max_length=200)
    provenance: Provenance
    processing_time: float = Field(ge=0.0)
    timestamp: datetime
    ai_generated: Literal[True] = True
    disclaimer: str = DISCLAIMER
    simulated: bool = False
    warnings: list[str] = Field(default_factory=list)

    @field_validator("label_probabilities")
    @classmethod
    def _probabilities(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        for label, probability in value.items():
            if not label or len(label) > 200:
                raise ValueError("labels must be 1 to 200 characters")
            if probability is not None and not 0.0 <= probability <= 1.0:
                raise ValueError("probabilities must be in 0..1")
        return value

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp must be timezone-aware")
        return value.astimezone(UTC)  # one instant, one serialisation: hashes must not vary

    @model_validator(mode="after")
    def _status_matches(self) -> AnalysisResult:
        if self.status == "error" and (self.error is None or self.findings):
            raise ValueError("an error result carries an error and no findings")
        if self.status == "ok" and self.error is not None:
            raise ValueError("an ok result carries no error")
        if self.disclaimer != DISCLAIMER:
            raise ValueError("the disclaimer is fixed")
        return self

    def canonical_json(self) -> bytes:
        """Sorted keys, no whitespace, UTF-8, no NaN: the same bytes for the same content."""
        return json.dumps(
            self.model_dump(mode="json"),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode()

    def sha256(self) -> str:
        """Hex SHA-256 of ``canonical_json()``: what the ledger registers."""
        return hashlib.sha256(self.canonical_json()).hexdigest()


def worst_severity(findings: Iterable[Finding]) -> Severity:
    """The most severe of ``findings``; ``normal`` when there are none."""
    return max((f.severity for f in findings), key=SEVERITY_ORDER.__getitem__, default=Severity.NORMAL)


def risk_from_findings(findings: Iterable[Finding]) -> int:
    """0..100 from the findings' severities and confidences.

    Each finding contributes its severity's weight times its confidence; contributions combine
    like independent risks (1 - product of (1 - r)), so one critical finding dominates and many
    low ones add up slowly.
    """
    remaining = 1.0
    for finding in findings:
        remaining *= 1.0 - _SEVERITY_RISK[finding.severity] * finding.confidence
    return round(100 * (1.0 - remaining))
