"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from irmsia import __version__
from irmsia.api import errors
from irmsia.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from irmsia.api.routers import API_PREFIX, admin, ai, audit, auth, dicom, health, images, ledger, users
from irmsia.bootstrap import Container, build_container
from irmsia.config import Settings, load_settings
from irmsia.usecases.ledger import make_scheduler

UPLOAD_PREFIXES = (f"{API_PREFIX}/dicom/upload", "/dicomweb/studies", "/portal/upload")

DESCRIPTION = """
IRMSIA keeps medical images private and tamper-evident, analyses them with AI and serves
the results. Authenticate with `POST /api/v1/auth/login` (OAuth2 password form) and send
`Authorization: Bearer <access_token>`. Every error body is
`{"error": code, "detail": message, "request_id": id}`.
"""


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> FastAPI:
    """Build the app from ``settings`` (read from the environment when omitted)."""
    if container is None:
        container = build_container(settings or load_settings())
    owned = container
    cfg = container.settings
    scheduler = make_scheduler(
        container.ledger,
        checkpoint_interval=cfg.LEDGER_CHECKPOINT_INTERVAL_SECONDS,
        anchor_interval=cfg.LEDGER_ANCHOR_INTERVAL_SECONDS,
        verify_interval=cfg.LEDGER_VERIFY_INTERVAL_SECONDS,
        verify_sample=cfg.LEDGER_VERIFY_SAMPLE,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        owned.resume_jobs()
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()
            owned.close()

    app = FastAPI(
        title="IRMSIA",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.container = container
    app.state.ledger = container.ledger  # read by irmsia.api.routers.ledger
    errors.install(app)
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=container.settings.MAX_JSON_BYTES,
        upload_limit=container.settings.MAX_UPLOAD_BYTES,
        upload_prefixes=UPLOAD_PREFIXES,
    )
    app.add_middleware(RequestContextMiddleware)
    for router in (
        health.router,
        auth.router,
        users.router,
        audit.router,
        dicom.router,
        images.router,
        admin.router,
        ai.router,
        ledger.router,
        ledger.blockchain_router,
    ):
        app.include_router(router)
    from irmsia.portal.web import install as install_portal

    install_portal(app)
    return app
