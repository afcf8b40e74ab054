"""The tamper-evident ledger: checkpoints, proofs, receipts, anchors, verification.

``router`` serves ``/api/v1/ledger/...``; ``blockchain_router`` the original design's
``/api/v1/blockchain/images/{image_id}/...``. Admins and auditors read; only the on-demand
anchor (admins) and verification (admins, auditors) act. The verifier key is public. Access
is decided in the use cases; handlers parse, call and serialise.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query, Request

from irmsia.api.deps import get_ctx
from irmsia.api.routers import API_PREFIX
from irmsia.api.schemas.ledger import (
    AccessRecordPublic,
    AnchorPagePublic,
    AnchorPublic,
    CheckpointPagePublic,
    CheckpointPublic,
    ConsistencyProofPublic,
    HashRecordPublic,
    ImageAccessLogPublic,
    ImageHashesPublic,
    InclusionProofPublic,
    MismatchPublic,
    PublicKeyPublic,
    ReceiptPublic,
    VerificationCreate,
    VerificationResult,
)
from irmsia.errors import LedgerError
from irmsia.ledger.service import CheckpointRecord
from irmsia.usecases.context import RequestContext
from irmsia.usecases.ledger import AnchorRecord, LedgerServices, b64
from irmsia.usecases.verify import VerificationReport, VerifyScope

router = APIRouter(prefix=f"{API_PREFIX}/ledger", tags=["ledger"])
blockchain_router = APIRouter(prefix=f"{API_PREFIX}/blockchain", tags=["ledger"])


async def get_ledger(request: Request) -> LedgerServices:
    """The ledger use cases the app was built with (``app.state.ledger``); ``async``: it never
    blocks, so it needs no worker thread (see ``deps.get_container``)."""
    services: LedgerServices | None = getattr(request.app.state, "ledger", None)
    if services is None:
        raise LedgerError("the ledger is not configured")
    return services


def _checkpoint(record: CheckpointRecord) -> CheckpointPublic:
    return CheckpointPublic(
        size=record.size, root_hash=b64(record.root_hash), note=record.note, created_at=record.created_at
    )


def _anchor(record: AnchorRecord) -> AnchorPublic:
    return AnchorPublic(**record.__dict__)


def _verification(report: VerificationReport) -> VerificationResult:
    body = {key: value for key, value in report.__dict__.items() if key != "mismatches"}
    return VerificationResult(
        **body, mismatches=[MismatchPublic(**mismatch.as_dict()) for mismatch in report.mismatches]
    )


@router.get("/public-key", response_model=PublicKeyPublic, summary="The log's verifier key (public)")
def public_key(ledger: LedgerServices = Depends(get_ledger)) -> PublicKeyPublic:
    return PublicKeyPublic(origin=ledger.ledger.origin, verifier_key=ledger.reads.public_key())


@router.get("/checkpoint", response_model=CheckpointPublic, summary="The latest signed checkpoint")
def latest_checkpoint(
    ctx: RequestContext = Depends(get_ctx), ledger: LedgerServices = Depends(get_ledger)
) -> CheckpointPublic:
    return _checkpoint(ledger.reads.latest_checkpoint(ctx))


@router.get("/checkpoints", response_model=CheckpointPagePublic, summary="Signed checkpoints, largest first")
def list_checkpoints(
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    ledger: LedgerServices = Depends(get_ledger),
) -> CheckpointPagePublic:
    page = ledger.reads.checkpoints(ctx, offset=offset, limit=limit)
    return CheckpointPagePublic(
        items=[_checkpoint(item) for item in page.items],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )


@router.get("/proof/inclusion", response_model=InclusionProofPublic, summary="Inclusion proof of one entry")
def inclusion_proof(
    index: int = Query(..., ge=0),
    size: int | None = Query(None, ge=1, description="tree size (default: the latest checkpoint's)"),
    ctx: RequestContext = Depends(get_ctx),
    ledger: LedgerServices = Depends(get_ledger),
) -> InclusionProofPublic:
    proof = ledger.reads.inclusion_proof(ctx, index, size)
    return InclusionProofPublic(
        index=proof.index,
        size=proof.size,
        entry=b64(proof.entry),
        leaf_hash=b64(proof.leaf_hash),
        proof=[b64(item) for item in proof.proof],
        root_hash=b64(proof.root),
        checkpoint=proof.checkpoint,
    )


@router.get(
    "/proof/consistency", response_model=ConsistencyProofPublic, summary="Consistency proof between two sizes"
)
def consistency_proof(
    first: int = Query(..., ge=1),
    second: int | None = Query(None, ge=1, description="larger size (default: the latest checkpoint's)"),
    ctx: RequestContext = Depends(get_ctx),
    ledger: LedgerServices = Depends(get_ledger),
) -> ConsistencyProofPublic:
    proof = ledger.reads.consistency_proof(ctx, first, second)
    return ConsistencyProofPublic(
        first=proof.first,
        second=proof.second,
        proof=[b64(item) for item in proof.proof],
        first_root=b64(proof.first_root),
        second_root=b64(proof.second_root),
        first_checkpoint=proof.first_checkpoint,
        second_checkpoint=proof.second_checkpoint,
    )


@router.get("/receipts/{object_id}", response_model=ReceiptPublic, summary="Receipt of a stored object")
def receipt(
    object_id: str, ctx: RequestContext = Depends(get_ctx), ledger: LedgerServices = Depends(get_ledger)
) -> ReceiptPublic:
    found = ledger.reads.receipt(ctx, object_id)
    return ReceiptPublic(
        object_id=found.object_id,
        index=found.index,
        checkpoint_size=found.checkpoint_size,
        receipt=json.loads(found.json),
    )


@router.get("/anchors", response_model=AnchorPagePublic, summary="Checkpoint publications, newest first")
def list_anchors(
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    ctx: RequestContext = Depends(get_ctx),
    ledger: LedgerServices = Depends(get_ledger),
) -> AnchorPagePublic:
    page = ledger.reads.anchors(ctx, offset=offset, limit=limit)
    return AnchorPagePublic(
        items=[_anchor(item) for item in page.items], total=page.total, offset=page.offset, limit=page.limit
    )


@router.post(
    "/anchors", response_model=list[AnchorPublic], summary="Sign and anchor a checkpoint now (admin)"
)
def publish_anchors(
    ctx: RequestContext = Depends(get_ctx), ledger: LedgerServices = Depends(get_ledger)
) -> list[AnchorPublic]:
    return [_anchor(record) for record in ledger.anchoring.publish(ctx)]


@router.post("/verify", response_model=VerificationResult, summary="Verify blobs, log and checkpoints now")
def verify(
    body: VerificationCreate | None = None,
    ctx: RequestContext = Depends(get_ctx),
    ledger: LedgerServices = Depends(get_ledger),
) -> VerificationResult:
    scope = VerifyScope(study_id=body.study_id, sample=body.sample) if body else VerifyScope()
    return _verification(ledger.verification.run(ctx, scope, trigger="api"))


@router.get("/verification", response_model=VerificationResult, summary="The last verification result")
def last_verification(
    ctx: RequestContext = Depends(get_ctx), ledger: LedgerServices = Depends(get_ledger)
) -> VerificationResult:
    return _verification(ledger.verification.last(ctx))


@blockchain_router.get(
    "/images/{image_id}/hash", response_model=ImageHashesPublic, summary="Logged hashes of an image's objects"
)
def image_hashes(
    image_id: str, ctx: RequestContext = Depends(get_ctx), ledger: LedgerServices = Depends(get_ledger)
) -> ImageHashesPublic:
    records = ledger.reads.image_hashes(ctx, image_id)
    return ImageHashesPublic(
        image_id=image_id,
        records=[
            HashRecordPublic(log_index=r.index, **{k: v for k, v in r.__dict__.items() if k != "index"})
            for r in records
        ],
    )


@blockchain_router.get(
    "/images/{image_id}/access-logs",
    response_model=ImageAccessLogPublic,
    summary="Logged audit records about an image",
)
def image_access_logs(
    image_id: str, ctx: RequestContext = Depends(get_ctx), ledger: LedgerServices = Depends(get_ledger)
) -> ImageAccessLogPublic:
    records = ledger.reads.image_access_log(ctx, image_id)
    return ImageAccessLogPublic(
        image_id=image_id, events=[AccessRecordPublic(log_index=r.index, event=r.event) for r in records]
    )
