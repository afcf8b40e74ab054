"""DICOM upload (multipart: .dcm files and/or .zip archives, streamed) and pipeline jobs.

Job status is for uploaders (their own jobs) and up; listing jobs and retrying or discarding
failed ones is for admins (decided in ``irmsia.usecases.jobs``).
"""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from starlette.requests import ClientDisconnect

from irmsia.api.deps import get_container, get_ctx
from irmsia.api.multipart import body_pieces, boundary_of, file_parts
from irmsia.api.routers import API_PREFIX
from irmsia.api.schemas.ingest import JobPagePublic, JobPublic, UploadBatch, UploadResult
from irmsia.bootstrap import Container
from irmsia.db.jobs import Job
from irmsia.errors import InvalidDicom, InvalidRequest, PayloadTooLarge
from irmsia.usecases.context import RequestContext
from irmsia.usecases.ingest import Batch, FileResult, IncomingFile
from irmsia.usecases.jobs import retryable

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
    try:
        batch = container.ingest.submit(ctx, files, wait=wait, validation=validation)
    except ClientDisconnect:
        # The body ended early: the client went away, or the body limit was reached and the
        # middleware has already answered 413. The object being read left nothing behind.
        raise InvalidRequest("the upload ended before its body was complete") from None
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


@router.get("/jobs", response_model=JobPagePublic, summary="Pipeline jobs, newest first (admins)")
def list_jobs(
    state: Literal["pending", "running", "succeeded", "failed"] | None = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> JobPagePublic:
    page = container.jobs.list(ctx, state=state, offset=offset, limit=limit)
    return JobPagePublic(
        items=[_job(job) for job in page.items], total=page.total, offset=page.offset, limit=page.limit
    )


@router.get("/jobs/{job_id}", response_model=JobPublic, summary="State of a pipeline job")
def get_job(
    job_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> JobPublic:
    return _job(container.ingest.job(ctx, job_id))


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobPublic,
    summary="Queue a failed job that kept its input again (admins)",
)
def retry_job(
    job_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> JobPublic:
    return _job(container.jobs.retry(ctx, job_id))


@router.post(
    "/jobs/{job_id}/discard",
    response_model=JobPublic,
    summary="Delete the kept input of a failed job (admins)",
)
def discard_job(
    job_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> JobPublic:
    return _job(container.jobs.discard(ctx, job_id))


def _job(job: Job) -> JobPublic:
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
        retryable=retryable(job),
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
