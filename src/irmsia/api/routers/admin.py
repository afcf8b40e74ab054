"""Admin-only: re-identification vault, quarantine review, key management."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query

from irmsia.api.deps import get_container, get_ctx
from irmsia.api.routers import API_PREFIX
from irmsia.api.schemas.images import ImagePublic, KeyStatusPublic, QuarantinePage, RotationPublic
from irmsia.bootstrap import Container
from irmsia.usecases.context import RequestContext

router = APIRouter(prefix=API_PREFIX, tags=["admin"])


@router.get("/vault/{kind}/{pseudonym}", summary="Re-identify a pseudonym (admin, audited)")
def reidentify(
    kind: Literal["patient", "accession"],
    pseudonym: str,
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> dict[str, object]:
    return {
        "kind": kind,
        "pseudonym": pseudonym,
        "identity": container.retrieve.reidentify(ctx, kind, pseudonym),
    }


@router.get("/quarantine", response_model=QuarantinePage, summary="Images held for burned-in-text review")
def list_quarantine(
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    container: Container = Depends(get_container),
) -> QuarantinePage:
    rows, total = container.retrieve.quarantined(ctx, offset=offset, limit=limit)
    return QuarantinePage(items=[ImagePublic.model_validate(r) for r in rows], total=total)


@router.post("/quarantine/{image_id}/release", response_model=ImagePublic, summary="Release a reviewed image")
def release(
    image_id: str, ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> ImagePublic:
    return ImagePublic.model_validate(container.retrieve.release(ctx, image_id))


@router.get("/keys", response_model=KeyStatusPublic, summary="Key-encryption keys and what they wrap")
def key_status(
    ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> KeyStatusPublic:
    status = container.key_admin.status(ctx)
    return KeyStatusPublic(
        current_key_id=status.current_key_id,
        key_ids=list(status.key_ids),
        wrapped_by_key=status.wrapped_by_key,
    )


@router.post("/keys/rotate", response_model=RotationPublic, summary="Add a KEK and re-wrap every data key")
def rotate_keys(
    ctx: RequestContext = Depends(get_ctx), container: Container = Depends(get_container)
) -> RotationPublic:
    rotation = container.key_admin.rotate(ctx)
    return RotationPublic(new_key_id=rotation.new_key_id, rewrapped=rotation.rewrapped)
