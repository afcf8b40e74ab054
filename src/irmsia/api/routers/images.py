"""Browse and download de-identified images: patients, studies, series, images, files."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, status
from fastapi.responses import Response, StreamingResponse

from irmsia.api.deps import get_container, get_ctx
from irmsia.api.routers import API_PREFIX
from irmsia.api.schemas.images import (
    ImageDetail,
    ImagePage,
    ImagePublic,
    PatientPage,
    PatientPublic,
    SeriesDetail,
    SeriesListed,
    SeriesPage,
    SeriesPublic,
    StoredObjectPublic,
    StudyDetail,
    StudyPage,
    StudyPublic,
)
from irmsia.bootstrap import Container
from irmsia.db.imaging import Study
from irmsia.db.index import InstanceFilter, SeriesFilter, StudyFilter
from irmsia.errors import InvalidRequest
from irmsia.usecases.context import RequestContext
from irmsia.usecases.retrieve import Download

router = APIRouter(prefix=API_PREFIX, tags=["images"])

# Parameter declarations are built per use: FastAPI writes the parameter's name into the
# declaration as its alias, so one shared Query(...) would make every later use answer to
# the first one's name (?pseudonym= instead of ?patient=).


def _pseudonym() -> Any:
    return Query(None, max_length=64, description="patient pseudonym (IRM-…)")


def _modality() -> Any:
    return Query(None, max_length=16, pattern="^[A-Za-z]{2,16}$", description="modality (CT, MR, …)")


def _body_part() -> Any:
    return Query(
        None, max_length=16, pattern="^[A-Za-z0-9_ ]{1,16}$", description="Body Part Examined (CHEST, …)"
    )


@router.get("/patients", response_model=PatientPage, summary="Patients (by pseudonym) with study counts")
def list_patients(
    pseudonym: str | None = _pseudonym(),
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> PatientPage:
    page = container.search.patients(ctx, pseudonym=pseudonym, offset=offset, limit=limit)
    items = [
        PatientPublic(pseudonym=r.patient.pseudonym, studies=r.studies, last_study_date=r.last_study_date)
        for r in page.items
    ]
    return PatientPage(items=items, total=page.total, offset=page.offset, limit=page.limit)


@router.get("/studies", response_model=StudyPage, summary="Studies, newest first, with filters")
def list_studies(
    patient: str | None = _pseudonym(),
    date_from: date | None = Query(None, description="study date (after the per-patient shift) from"),
    date_to: date | None = Query(None, description="study date to (inclusive)"),
    modality: str | None = Query(None, max_length=16, pattern="^[A-Za-z]{2,16}$"),
    accession: str | None = Query(None, max_length=64, description="pseudonymised accession number"),
    body_part: str | None = _body_part(),
    ai_status: Literal["not_analysed", "analysed", "error", "signed"] | None = Query(
        None, description="AI status of the study (needs ai:read)"
    ),
    min_risk: int | None = Query(None, ge=0, le=100, description="highest AI risk at least this (ai:read)"),
    sort: Literal["newest", "oldest", "risk"] = Query("newest", description="risk: highest AI risk first"),
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> StudyPage:
    if date_from and date_to and date_from > date_to:
        raise InvalidRequest("date_from must not be after date_to")
    flt = StudyFilter(
        patient,
        date_from,
        date_to,
        modality,
        accession,
        body_part=body_part,
        ai_status=ai_status,
        min_risk=min_risk,
        sort=sort,
    )
    page = container.search.studies(ctx, flt, offset=offset, limit=limit)
    return StudyPage(
        items=[_study(s) for s in page.items], total=page.total, offset=page.offset, limit=page.limit
    )


@router.get("/studies/{study_id}", response_model=StudyDetail, summary="A study with its series")
def get_study(
    study_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> StudyDetail:
    study = container.search.study(ctx, study_id)
    series = [
        SeriesPublic(
            id=s.id,
            series_uid=s.series_uid,
            modality=s.modality,
            body_part=s.body_part,
            description=s.description,
            series_number=s.series_number,
            images=len(s.instances),
        )
        for s in sorted(study.series, key=lambda s: (s.series_number is None, s.series_number or 0))
        if s.instances
    ]
    return StudyDetail(**_study(study).model_dump(), series=series)


@router.delete(
    "/studies/{study_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete (crypto-shred) a study"
)
def delete_study(
    study_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> None:
    container.retrieve.delete_study(ctx, study_id)


@router.get("/series", response_model=SeriesPage, summary="Series, newest study first, with filters")
def list_series(
    study: str | None = Query(None, max_length=32, description="study id"),
    patient: str | None = _pseudonym(),
    modality: str | None = _modality(),
    body_part: str | None = _body_part(),
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> SeriesPage:
    flt = SeriesFilter(study_id=study, patient_pseudonym=patient, modality=modality, body_part=body_part)
    page = container.search.series_list(ctx, flt, offset=offset, limit=limit)
    items = [
        SeriesListed(
            id=row.series.id,
            series_uid=row.series.series_uid,
            modality=row.series.modality,
            body_part=row.series.body_part,
            description=row.series.description,
            series_number=row.series.series_number,
            images=row.images,
            study_id=row.series.study_id,
            patient_pseudonym=row.series.study.patient.pseudonym,
            study_date=row.series.study.study_date,
        )
        for row in page.items
    ]
    return SeriesPage(items=items, total=page.total, offset=page.offset, limit=page.limit)


@router.get("/images", response_model=ImagePage, summary="Images (instances), in series and instance order")
def list_images(
    series: str | None = Query(None, max_length=32, description="series id"),
    study: str | None = Query(None, max_length=32, description="study id"),
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> ImagePage:
    page = container.search.instances(
        ctx, InstanceFilter(series_id=series, study_id=study), offset=offset, limit=limit
    )
    return ImagePage(
        items=[ImagePublic.model_validate(i) for i in page.items],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )


@router.get("/series/{series_id}", response_model=SeriesDetail, summary="A series with its images, in order")
def get_series(
    series_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> SeriesDetail:
    series, instances = container.search.series(ctx, series_id)
    return SeriesDetail(
        id=series.id,
        study_id=series.study_id,
        series_uid=series.series_uid,
        modality=series.modality,
        body_part=series.body_part,
        description=series.description,
        series_number=series.series_number,
        images=len(instances),
        instances=[ImagePublic.model_validate(i) for i in instances],
    )


@router.get("/images/{image_id}", response_model=ImageDetail, summary="An image and its stored objects")
def get_image(
    image_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> ImageDetail:
    instance = container.retrieve.image(ctx, image_id)
    return ImageDetail(
        **ImagePublic.model_validate(instance).model_dump(),
        study_id=instance.series.study_id,
        objects=[StoredObjectPublic.model_validate(o) for o in instance.objects],
    )


@router.get("/images/{image_id}/dicom", summary="The de-identified DICOM file", response_class=Response)
def download_dicom(
    image_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> Response:
    return _send(container.retrieve.download(ctx, image_id, "dicom"), f"{image_id}.dcm")


@router.get("/images/{image_id}/frames/{frame}", summary="One frame as PNG", response_class=Response)
def download_frame(
    image_id: str,
    frame: int,
    bits: int = Query(8, description="8, or 16 when 16-bit PNGs are stored"),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> Response:
    if bits not in (8, 16) or frame < 0:
        raise InvalidRequest("frame must be ≥ 0 and bits 8 or 16")
    kind = "png" if bits == 8 else "png16"
    return _send(container.retrieve.download(ctx, image_id, kind, frame), None)


@router.get("/images/{image_id}/thumbnail", summary="Thumbnail PNG", response_class=Response)
def download_thumbnail(
    image_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> Response:
    return _send(container.retrieve.download(ctx, image_id, "thumbnail"), None)


@router.delete(
    "/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete (crypto-shred) an image"
)
def delete_image(
    image_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> None:
    container.retrieve.delete_image(ctx, image_id)


def _study(study: Study) -> StudyPublic:
    return StudyPublic(
        id=study.id,
        patient_pseudonym=study.patient.pseudonym,
        study_uid=study.study_uid,
        study_date=study.study_date,
        accession_pseudonym=study.accession_pseudonym,
        description=study.description,
        modalities=[m for m in study.modalities.split(",") if m],
        created_at=study.created_at,
    )


def _send(download: Download, filename: str | None) -> Response:
    headers = {"Content-Length": str(download.size), "Cache-Control": "private, no-store"}
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return StreamingResponse(download.chunks, media_type=download.media_type, headers=headers)
