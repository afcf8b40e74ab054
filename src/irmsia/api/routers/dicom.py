"""DICOM upload (multipart: .dcm files and/or .zip archives, streamed) and job status."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status

from irmsia.api.deps import get_container, get_ctx
from irmsia.api.multipart import body_pieces, boundary_of, file_parts
from irmsia.api.routers import API_PREFIX
from irmsia.api.schemas.ingest import JobPublic, UploadBatch, UploadResult
from irmsia.bootstrap import Container
from irmsia.errors import InvalidDicom, InvalidRequest, PayloadTooLarge
from irmsia.usecases.context import RequestContext
from irmsia.usecases.ingest import Batch, FileResult, IncomingFile

router = APIRouter(prefix=API_PREFIX, tags=["dicom"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["files"],
                }
            }
        },
    }
}


@router.post(
    "/dicom/upload",
    response_model=UploadBatch,
    summary="Upload DICOM files or zip archives",
    openapi_extra=UPLOAD_BODY,
    responses={202: {"model": UploadBatch, "description": "queued (wait=false)"}},
)
def upload(
    request: Request,
    response: Response,
    wait: bool = Query(True, description="answer when processing has finished (false: 202 and job ids)"),
    validation: Literal["strict", "lenient"] | None = Query(
        None, description="validation policy for this upload (default VALIDATION_MODE)"
    ),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> UploadBatch:
    boundary = boundary_of(request.headers.get("content-type"))
    parts = file_parts(body_pieces(request.stream().__aiter__()), boundary)
    files = (IncomingFile(data=part, label=str(number)) for number, part in enumerate(parts, start=1))
    batch = container.ingest.submit(ctx, files, wait=wait, validation=validation)
    if not batch.files:
        raise InvalidRequest("the request contains no file part")
    if wait and len(batch.files) == 1 and batch.files[0].error:
        only = batch.files[0]
        raise (PayloadTooLarge if only.error == "payload_too_large" else InvalidDicom)(
            only.detail or "rejected",
            *(() if only.error == "payload_too_large" else (only.error or "invalid",)),
        )
    if not wait:
        response.status_code = status.HTTP_202_ACCEPTED
    return _batch(batch)


@router.get("/jobs/{job_id}", response_model=JobPublic, summary="State of a pipeline job")
def get_job(
    job_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> JobPublic:
    job = container.ingest.job(ctx, job_id)
    return JobPublic(
        id=job.id,
        kind=job.kind,
        state=job.state,
        step=job.step,
        attempt=job.attempt,
        batch_id=job.batch_id,
        error_code=job.error_code,
        error_detail=job.error_detail,
        result=json.loads(job.result or "{}"),
        timings_ms=json.loads(job.timings or "{}"),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _batch(batch: Batch) -> UploadBatch:
    return UploadBatch(
        batch_id=batch.batch_id, summary=batch.counts, files=[_file(item) for item in batch.files]
    )


def _file(item: FileResult) -> UploadResult:
    if item.error:
        return UploadResult(
            file=item.label,
            status="rejected",
            message=item.detail or "rejected",
            job_id=item.job_id,
            error=item.error,
        )
    if item.state != "succeeded":
        return UploadResult(file=item.label, status="pending", message="queued", job_id=item.job_id)
    result = item.result
    return UploadResult(
        file=item.label, job_id=item.job_id, **{k: v for k, v in result.items() if k in _FIELDS}
    )


_FIELDS = set(UploadResult.model_fields) - {"file", "job_id", "error"}
