"""AI analysis, results by image/study/patient, and per-study reports with sign-off."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Depends, Response

from irmsia.api.deps import get_container, get_ctx
from irmsia.api.routers import API_PREFIX
from irmsia.api.schemas.ai import AnalysisList, AnalysisPublic, AnalyzeRequest, SignOffRequest
from irmsia.bootstrap import Container
from irmsia.reports.amend import FindingEdit
from irmsia.usecases.analyze import StoredAnalysis
from irmsia.usecases.context import RequestContext

router = APIRouter(prefix=API_PREFIX, tags=["ai"])

EXTENSIONS = {"pdf": "pdf", "sr": "dcm", "fhir": "fhir.json", "json": "json"}


@router.post("/ai/analyze/{image_id}", response_model=AnalysisPublic, summary="Analyse one image now")
def analyze(
    image_id: str,
    body: AnalyzeRequest | None = None,
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> AnalysisPublic:
    request = body or AnalyzeRequest()
    stored = container.analyze.analyze(
        ctx,
        image_id,
        modality=request.modality,
        additional_context=request.additional_context,
        provider=request.provider,
    )
    return _public(stored)


@router.get("/ai/results/image/{image_id}", response_model=AnalysisList, summary="AI results of an image")
def results_for_image(
    image_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> AnalysisList:
    return AnalysisList(items=[_public(a) for a in container.analyze.for_image(ctx, image_id)])


@router.get("/ai/results/study/{study_id}", response_model=AnalysisList, summary="AI results of a study")
def results_for_study(
    study_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> AnalysisList:
    return AnalysisList(items=[_public(a) for a in container.analyze.for_study(ctx, study_id)])


@router.get("/ai/results/patient/{pseudonym}", response_model=AnalysisList, summary="AI results of a patient")
def results_for_patient(
    pseudonym: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> AnalysisList:
    return AnalysisList(items=[_public(a) for a in container.analyze.for_patient(ctx, pseudonym)])


@router.get("/reports/{study_id}", summary="The study's diagnostic report (JSON)")
def report_json(
    study_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> Response:
    return _download(container, ctx, study_id, "json")


@router.get("/reports/{study_id}/{fmt}", summary="The report as PDF, DICOM SR or FHIR R4 bundle")
def report_file(
    study_id: str,
    fmt: Literal["pdf", "sr", "fhir"],
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> Response:
    return _download(container, ctx, study_id, fmt)


@router.post("/reports/{study_id}/sign", summary="Confirm, edit or reject the AI report (radiologist)")
def sign(
    study_id: str,
    body: SignOffRequest,
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> Response:
    report = container.reports.sign(
        ctx,
        study_id,
        body.decision,
        narrative=body.narrative,
        comment=body.comment,
        diagnosis=body.diagnosis,
        findings=[
            FindingEdit(edit.image_id, edit.index, severity=edit.severity, remove=edit.remove)
            for edit in body.findings
        ],
    )
    return Response(report.to_json(), media_type="application/json")


def _download(
    container: Container, ctx: RequestContext, study_id: str, fmt: Literal["json", "pdf", "sr", "fhir"]
) -> Response:
    rendered = container.reports.render(ctx, study_id, fmt)
    headers = {"Cache-Control": "private, no-store"}
    if fmt != "json":
        headers["Content-Disposition"] = (
            f'attachment; filename="{rendered.report.report_id}.{EXTENSIONS[fmt]}"'
        )
    return Response(rendered.content, media_type=rendered.media_type, headers=headers)


def _public(stored: StoredAnalysis) -> AnalysisPublic:
    return AnalysisPublic(
        analysis_id=stored.id,
        image_id=stored.image_id,
        series_id=stored.series_id,
        study_id=stored.study_id,
        patient_pseudonym=stored.patient_pseudonym,
        result=json.loads(stored.result.canonical_json()),
    )
