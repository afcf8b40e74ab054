"""The one diagnostic-report model that the PDF, DICOM SR and FHIR builders read.

A ``Report`` describes one study's AI analysis and its clinical sign-off. It holds only
de-identified values: pseudonyms, opaque ids, replacement UIDs and shifted dates; no
field is meant for a name, a real identifier or an original UID. Every model is frozen and
refuses unknown fields; validation errors never echo input values
(``hide_input_in_errors``), so they are safe to log.

``Report.canonical_json()`` is the byte string the ledger registers: sorted-key, compact,
UTF-8 JSON of the report content (schema tag included, ledger fields excluded, each
thumbnail replaced by its SHA-256) and ``Report.content_sha256()`` its digest. A signed or
rejected report has a different content, hence a different digest, from its preliminary
version: register each state.

Times are passed in (no clock reads) and must be timezone-aware; they are normalised to UTC.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from irmsia.errors import InvalidRequest

__all__ = [
    "DISCLAIMER",
    "REPORT_SCHEMA",
    "SIMULATED_NOTE",
    "UNSIGNED_NOTE",
    "Finding",
    "ImageResult",
    "Provenance",
    "Report",
    "ReportStatus",
    "Severity",
    "SignOff",
    "SignOffAction",
    "Study",
    "canonical_json",
    "format_time",
    "parse_report",
    "status_banner",
]

DISCLAIMER = (
    "This report was produced with the help of artificial intelligence. Its findings, risk "
    "scores, probabilities and suggested diagnoses are decision support only: they are not a "
    "diagnosis and must be reviewed by a qualified clinician before any clinical use."
)
UNSIGNED_NOTE = "It has not been reviewed by a clinician and must not be used for clinical decisions."
SIMULATED_NOTE = (
    "Results marked SIMULATED come from IRMSIA's demonstration provider, not from a real model, "
    "and carry no clinical meaning."
)

# Tags the canonical content, so a later change of the model cannot collide with old hashes.
REPORT_SCHEMA = "irmsia.report/1"

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_MAX_UID_LENGTH = 64  # DICOM PS3.5 §9.1
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Opaque ids and pseudonyms end up in DICOM LO values, FHIR identifiers and file names.
_OPAQUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")  # DICOM CS


def _uid(value: str) -> str:
    if len(value) > _MAX_UID_LENGTH or not _UID.fullmatch(value):
        raise ValueError("not a DICOM UID")
    return value


def _opaque(value: str) -> str:
    if not _OPAQUE.fullmatch(value):
        raise ValueError("not an opaque id (1-64 letters, digits, '.', '_', ':', '-')")
    return value


def _sha256_hex(value: str) -> str:
    if not _SHA256_HEX.fullmatch(value):
        raise ValueError("not 64 lowercase hex characters")
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Uid = Annotated[str, AfterValidator(_uid)]
OpaqueId = Annotated[str, AfterValidator(_opaque)]
Sha256Hex = Annotated[str, AfterValidator(_sha256_hex)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
Text = Annotated[str, Field(min_length=1, max_length=10_000)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
# The AI result schema's own limits (irmsia.ai.schema): anything a valid result holds fits a report.
AIText = Annotated[str, Field(min_length=1, max_length=500)]
AINarrative = Annotated[str, Field(min_length=1, max_length=20_000)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Severity(StrEnum):
    """How serious a finding is; ``normal`` means nothing abnormal was found."""

    NORMAL = "normal"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    CRITICAL = "critical"


class ReportStatus(StrEnum):
    """``preliminary`` until a clinician signs it off as ``final`` or ``rejected``."""

    PRELIMINARY = "preliminary"
    FINAL = "final"
    REJECTED = "rejected"


class SignOffAction(StrEnum):
    """What the signing clinician did with the AI's proposal."""

    CONFIRMED = "confirmed"
    EDITED = "edited"
    REJECTED = "rejected"


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
        allow_inf_nan=False,
        # DICOM drops trailing blanks and FHIR forbids them: keep one spelling of each text.
        str_strip_whitespace=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )


class Study(_Frozen):
    """The analysed study, de-identified: ``study_date`` is already shifted."""

    study_id: OpaqueId
    study_instance_uid: Uid
    study_date: date | None = None
    modalities: tuple[Annotated[str, Field(pattern=_MODALITY.pattern)], ...] = ()
    # Accession Number is SH in DICOM: 16 characters at most.
    accession_pseudonym: Annotated[OpaqueId, Field(max_length=16)] | None = None


class Finding(_Frozen):
    """One finding of an AI model on one image; ``confidence`` is in 0..1."""

    description: AIText
    location: ShortText | None = None
    confidence: Probability
    severity: Severity


class Provenance(_Frozen):
    """Which algorithm produced a result: provider, model name, version, weights digest."""

    provider: ShortText
    model: ShortText
    version: ShortText
    weights_sha256: Sha256Hex | None = None


class ImageResult(_Frozen):
    """The AI result for one de-identified image (UIDs are the replacement UIDs).

    ``thumbnail_png`` must be PNG bytes when given. ``probabilities`` maps a label to a
    probability in 0..1. ``simulated`` marks results of the demo provider, not of a model.
    """

    image_id: OpaqueId
    sop_instance_uid: Uid
    sop_class_uid: Uid
    series_instance_uid: Uid
    thumbnail_png: bytes | None = None
    findings: tuple[Finding, ...] = ()
    risk_score: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
    suggested_diagnosis: AIText | None = None
    recommendations: tuple[AIText, ...] = ()
    probabilities: dict[ShortText, Probability] = Field(default_factory=dict)
    narrative: AINarrative | None = None
    provenance: Provenance
    simulated: bool = False

    @field_validator("thumbnail_png")
    @classmethod
    def _png(cls, value: bytes | None) -> bytes | None:
        if value is not None and not value.startswith(_PNG_SIGNATURE):
            raise ValueError("thumbnail is not a PNG image")
        return value


class SignOff(_Frozen):
    """Who signed the report, when, and what they did; ``username`` is the clinician's login.

    An edited sign-off carries at least one edit: the clinician's narrative
    (``edited_narrative``), their diagnosis (``edited_diagnosis``, in place of the AI's
    suggested ones), or ``amendments``: one sentence per change made to the AI findings
    (a finding removed or its severity changed; the report's images show the changed findings).
    """

    user_id: OpaqueId
    username: ShortText
    signed_at: UtcDatetime
    action: SignOffAction
    edited_narrative: Text | None = None
    edited_diagnosis: ShortText | None = None
    amendments: tuple[Text, ...] = ()
    comment: Text | None = None

    @property
    def has_edits(self) -> bool:
        return bool(self.edited_narrative is not None or self.edited_diagnosis is not None or self.amendments)

    @model_validator(mode="after")
    def _edited_has_text(self) -> Self:
        if self.action is SignOffAction.EDITED and not self.has_edits:
            raise ValueError("an edited sign-off needs an edited narrative, diagnosis or finding")
        if self.action is not SignOffAction.EDITED and self.has_edits:
            raise ValueError("only an edited sign-off carries edits")
        return self


_STATUS_OF_ACTION = {
    SignOffAction.CONFIRMED: ReportStatus.FINAL,
    SignOffAction.EDITED: ReportStatus.FINAL,
    SignOffAction.REJECTED: ReportStatus.REJECTED,
}


class Report(_Frozen):
    """A per-study diagnostic report built from AI results, with its sign-off state.

    ``status`` must agree with ``sign_off``: preliminary has none, final a confirmed or
    edited sign-off, rejected a rejected one. ``ledger_hash``/``ledger_index`` are set once
    the ledger registered ``canonical_json()``; they are not part of that content.
    """

    report_id: OpaqueId
    study: Study
    patient_pseudonym: OpaqueId
    images: tuple[ImageResult, ...] = ()
    status: ReportStatus = ReportStatus.PRELIMINARY
    sign_off: SignOff | None = None
    ledger_hash: Sha256Hex | None = None
    ledger_index: Annotated[int, Field(ge=0)] | None = None
    created_at: UtcDatetime

    @model_validator(mode="after")
    def _status_matches_sign_off(self) -> Self:
        if self.sign_off is None:
            if self.status is not ReportStatus.PRELIMINARY:
                raise ValueError("a final or rejected report needs a sign-off")
        elif _STATUS_OF_ACTION[self.sign_off.action] is not self.status:
            raise ValueError("status does not match the sign-off action")
        image_ids = [image.image_id for image in self.images]
        if len(set(image_ids)) != len(image_ids):
            raise ValueError("image ids must be unique within a report")
        return self

    @property
    def is_signed(self) -> bool:
        """True once a clinician confirmed, edited or rejected the report."""
        return self.sign_off is not None

    @property
    def simulated(self) -> bool:
        """True when any image result came from the simulated (demo) provider."""
        return any(image.simulated for image in self.images)

    @property
    def conclusion(self) -> str | None:
        """The report's narrative: the clinician's edited text, else the AI narratives joined."""
        if self.sign_off is not None and self.sign_off.edited_narrative is not None:
            return self.sign_off.edited_narrative
        narratives = [image.narrative for image in self.images if image.narrative]
        return "\n\n".join(narratives) or None

    def content(self) -> dict[str, Any]:
        """The report content as JSON-compatible data: what the ledger's hash covers."""
        data = self.model_dump(mode="json", exclude={"ledger_hash", "ledger_index"})
        if data["sign_off"] is not None:
            # Added after schema 1 was first registered: left out when unused, so reports
            # signed without them keep their registered digests.
            for key, empty in (("edited_diagnosis", None), ("amendments", [])):
                if data["sign_off"][key] == empty:
                    del data["sign_off"][key]
        for image, original in zip(data["images"], self.images, strict=True):
            del image["thumbnail_png"]
            image["thumbnail_sha256"] = (
                hashlib.sha256(original.thumbnail_png).hexdigest() if original.thumbnail_png else None
            )
        return {"schema": REPORT_SCHEMA, **data}

    def canonical_json(self) -> bytes:
        """Sorted-key, compact UTF-8 JSON of ``content()``: the bytes to register."""
        return canonical_json(self.content())

    def content_sha256(self) -> str:
        """SHA-256 (lowercase hex) of ``canonical_json()``."""
        return hashlib.sha256(self.canonical_json()).hexdigest()

    def to_json(self) -> str:
        """Full JSON for storage, thumbnails as base64 and ledger fields included."""
        return self.model_dump_json()


_FIELD_NAMES = frozenset(
    name
    for model in (Study, Finding, Provenance, ImageResult, SignOff, Report)
    for name in model.model_fields
)


def format_time(moment: datetime) -> str:
    """A UTC time as people read it in a report: ``2026-03-02 14:30 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def status_banner(report: Report) -> str:
    """The one-line state of the report, as printed on top of the PDF."""
    sign_off = report.sign_off
    if report.status is ReportStatus.PRELIMINARY or sign_off is None:
        return "PRELIMINARY — AI-GENERATED, NOT FOR CLINICAL USE"
    when = format_time(sign_off.signed_at)
    if report.status is ReportStatus.REJECTED:
        return f"REJECTED — by {sign_off.username} on {when}"
    return f"FINAL — signed by {sign_off.username} on {when}"


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the same bytes for the same content."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def parse_report(data: Mapping[str, Any] | str | bytes) -> Report:
    """Validate a report from a mapping or from JSON (as written by ``Report.to_json``).

    Raises InvalidRequest naming the offending fields, never their values.
    """
    try:
        if isinstance(data, str | bytes):
            return Report.model_validate_json(data)
        return Report.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidRequest(f"invalid report: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        # Dict keys and unknown field names come from the caller: show only our own names.
        where = ".".join(
            str(part) if isinstance(part, int) or part in _FIELD_NAMES else "?" for part in error["loc"]
        )
        problems.append(f"{where or 'report'} ({error['type']})")
    return "; ".join(problems[:10])
