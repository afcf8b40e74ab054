"""Changes a clinician makes to the AI findings when signing a report (pure).

A ``FindingEdit`` names a finding by its image (the report's ``image_id``) and its position
in that image's findings (0-based, as in the report JSON), and either removes it or gives it
another severity. ``apply_finding_edits`` returns the images with the changed findings and
one sentence per change for the sign-off, so a signed report says what differs from the AI
result it was built from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from irmsia.errors import InvalidRequest
from irmsia.reports.model import Finding, ImageResult, Severity

MAX_EDITS = 2000
_SEVERITIES = frozenset(severity.value for severity in Severity)


@dataclass(frozen=True)
class FindingEdit:
    """Remove finding ``index`` of image ``image_id``, or set its ``severity``."""

    image_id: str
    index: int
    severity: str | None = None
    remove: bool = False

    def to_json(self) -> dict[str, Any]:
        if self.remove:
            return {"image_id": self.image_id, "index": self.index, "remove": True}
        return {"image_id": self.image_id, "index": self.index, "severity": self.severity}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FindingEdit:
        return cls(
            image_id=str(data["image_id"]),
            index=int(data["index"]),
            severity=data.get("severity"),
            remove=bool(data.get("remove", False)),
        )


@dataclass(frozen=True)
class Amended:
    """The images after the edits, a sentence per change, and the edits that changed something."""

    images: tuple[ImageResult, ...]
    amendments: tuple[str, ...]
    edits: tuple[FindingEdit, ...]


def apply_finding_edits(images: Sequence[ImageResult], edits: Iterable[FindingEdit]) -> Amended:
    """Apply ``edits`` to the findings of ``images``; edits that change nothing are dropped.

    Raises ``InvalidRequest`` for an image that is not in the report, a finding position out
    of range, two edits of one finding, an unknown severity, or an edit that both removes and
    sets a severity (or does neither).
    """
    by_image = {image.image_id: (number, image) for number, image in enumerate(images, 1)}
    wanted: dict[tuple[str, int], FindingEdit] = {}
    for edit in edits:
        if len(wanted) >= MAX_EDITS:
            raise InvalidRequest(f"at most {MAX_EDITS} finding changes per sign-off")
        if edit.image_id not in by_image:
            raise InvalidRequest("a finding change names an image that is not in the report")
        findings = by_image[edit.image_id][1].findings
        if not 0 <= edit.index < len(findings):
            raise InvalidRequest("a finding change names a finding the image does not have")
        if edit.remove == (edit.severity is not None):
            raise InvalidRequest("a finding change either removes the finding or gives a severity")
        if edit.severity is not None and edit.severity not in _SEVERITIES:
            raise InvalidRequest(f"severity must be one of {', '.join(s.value for s in Severity)}")
        key = (edit.image_id, edit.index)
        if key in wanted:
            raise InvalidRequest("a finding is changed twice")
        if edit.remove or Severity(edit.severity or "") is not findings[edit.index].severity:
            wanted[key] = edit
    amended: list[ImageResult] = []
    sentences: list[str] = []
    for image in images:
        number = by_image[image.image_id][0]
        if not any(image_id == image.image_id for image_id, _ in wanted):
            amended.append(image)
            continue
        kept: list[Finding] = []
        for index, finding in enumerate(image.findings):
            change = wanted.get((image.image_id, index))
            if change is None:
                kept.append(finding)
                continue
            where = f"Image {number} ({image.image_id}): finding “{finding.description}”"
            if change.remove:
                sentences.append(f"{where} removed (AI severity {finding.severity.value}).")
                continue
            severity = Severity(change.severity or "")
            sentences.append(f"{where} severity changed from {finding.severity.value} to {severity.value}.")
            kept.append(finding.model_copy(update={"severity": severity}))
        amended.append(image.model_copy(update={"findings": tuple(kept)}))
    ordered = tuple(wanted[key] for key in sorted(wanted, key=lambda k: (by_image[k[0]][0], k[1])))
    return Amended(images=tuple(amended), amendments=tuple(sentences), edits=ordered)
