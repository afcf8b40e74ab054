"""The upload page and its endpoint: one request per file, so the browser can show per-file progress."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from irmsia.api.multipart import body_pieces, boundary_of, file_parts
from irmsia.errors import InvalidRequest
from irmsia.pipeline.job import JobState
from irmsia.portal.deps import csrf_header, current_session, get_container, page_ctx
from irmsia.portal.error_pages import PortalRoute
from irmsia.portal.pages import PAGE_HEADERS, render
from irmsia.portal.sessions import PortalSession
from irmsia.security.policy import Permission, authorize
from irmsia.usecases.context import RequestContext
from irmsia.usecases.ingest import FileResult, IncomingFile

router = APIRouter(route_class=PortalRoute, include_in_schema=False)


@router.get("/portal/upload", name="portal.upload")
def upload_page(
    request: Request,
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    # The page shows no data: ask the policy the same question the upload endpoint's use case asks.
    principal = authorize(ctx.principal, Permission.UPLOAD_IMAGES)
    return render(
        request, "upload.html", {"title": "Upload", "can_view": principal.can(Permission.READ_IMAGES)}
    )


@router.post("/portal/upload/file", name="portal.upload_file", dependencies=[Depends(csrf_header)])
def upload_file(
    request: Request,
    validation: Literal["strict", "lenient"] | None = Query(None),
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    """Ingest the file parts of a multipart body (a DICOM file or a zip) and answer each object's outcome.

    The body is streamed into the ingest use case (never buffered whole, never spooled in
    clear). Results name objects by position only: file names are neither read nor echoed.
    """
    container = get_container(request)
    boundary = boundary_of(request.headers.get("content-type"))
    parts = file_parts(body_pieces(request.stream().__aiter__()), boundary)
    files = (IncomingFile(data=part, label=str(number)) for number, part in enumerate(parts, start=1))
    batch = container.ingest.submit(ctx, files, wait=True, validation=validation)
    if not batch.files:
        raise InvalidRequest("the request contains no file")
    body = {"summary": batch.counts, "results": [outcome(item) for item in batch.files]}
    return JSONResponse(body, headers=PAGE_HEADERS)


def outcome(item: FileResult) -> dict[str, Any]:
    """One object's outcome for the upload page: status, a PHI-free sentence, and opaque ids."""
    if item.error:
        return {
            "part": item.label,
            "status": "rejected",
            "reason": item.error,
            "message": item.detail or "rejected",
        }
    if item.state != JobState.SUCCEEDED.value:
        return {"part": item.label, "status": "pending", "message": "queued"}
    result = item.result
    return {
        "part": item.label,
        "status": result.get("status", "stored"),
        "message": result.get("message", ""),
        "study_id": result.get("study_id"),
        "image_id": result.get("image_id"),
        "patient_pseudonym": result.get("patient_pseudonym"),
    }
