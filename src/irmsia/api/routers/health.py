"""Liveness and readiness probes (no authentication, no data)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from irmsia.api.deps import get_container
from irmsia.bootstrap import Container

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Database reachable and storage writable")
def readyz(container: Container = Depends(get_container)) -> dict[str, object]:
    return {"status": "ready", "checks": container.check_ready()}
