"""Schemas of the AI analysis and report endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class SignOffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["confirm", "edit", "reject"]
    narrative: str | None = Field(None, max_length=20000, description="the corrected narrative, with edit")
    comment: str | None = Field(None, max_length=4000)
