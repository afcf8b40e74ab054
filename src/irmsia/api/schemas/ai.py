"""Schemas of the AI analysis and report endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AnalyzeRequest(BaseModel):
    """As in the original design: an optional modality override and free-text context."""

    model_config = ConfigDict(extra="forbid")
    modality: str | None = Field(None, pattern="^[A-Za-z]{2,16}$")
    additional_context: str = Field(
        "", max_length=2000, description="no patient data: it may reach a remote model"
    )
    provider: str | None = Field(None, pattern="^[a-z_]{2,32}$", description="override the routing")


class AnalysisPublic(BaseModel):
    analysis_id: str
    image_id: str
    series_id: str
    study_id: str
    patient_pseudonym: str
    result: dict[str, Any]


class AnalysisList(BaseModel):
    items: list[AnalysisPublic]


Severity = Literal["normal", "low", "moderate", "high", "critical"]


class FindingEdit(BaseModel):
    """Remove one AI finding, or change its severity (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid")
    image_id: str = Field(max_length=64, description="the image's id, as in the report's images[].image_id")
    index: int = Field(ge=0, le=999, description="the finding's position in that image's findings (from 0)")
    severity: Severity | None = Field(None, description="the new severity")
    remove: bool = Field(False, description="remove the finding from the signed report")

    @model_validator(mode="after")
    def _one_change(self) -> FindingEdit:
        if self.remove == (self.severity is not None):
            raise ValueError("give either severity or remove")
        return self


class SignOffRequest(BaseModel):
    """``edit`` needs at least one of ``narrative``, ``diagnosis``, ``findings``; the others none."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["confirm", "edit", "reject"]
    narrative: str | None = Field(None, max_length=10000, description="the corrected narrative, with edit")
    diagnosis: str | None = Field(
        None, max_length=200, description="the clinician's diagnosis, with edit (the AI's are suggestions)"
    )
    findings: list[FindingEdit] = Field(
        default_factory=list, max_length=2000, description="changes to the AI findings, with edit"
    )
    comment: str | None = Field(None, max_length=4000)
