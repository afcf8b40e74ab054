"""Build every concrete backend once, from ``Settings``.

Nothing is built at import time: ``build_container(settings)`` returns a fresh object
graph, so two apps with different settings can live in one process (tests do this).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
from argon2 import PasswordHasher
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock, utc_now
from irmsia.config import Settings
from irmsia.crypto.envelope import EnvelopeCipher
from irmsia.db import migrate
from irmsia.db.engine import make_engine, make_session_factory, ping
from irmsia.errors import ConfigError
from irmsia.security.passwords import Passwords
from irmsia.security.tokens import AccessTokens
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.auth import Authenticator, ThrottlePolicy
from irmsia.usecases.users import Accounts

if TYPE_CHECKING:
    from irmsia.ai.factory import AIConfig
    from irmsia.crypto.keys import KeyProvider
    from irmsia.domain.deid import DeidOptions
    from irmsia.ledger.anchors import Anchor
    from irmsia.pipeline.executors import Executor
    from irmsia.pipeline.ingest import IngestConfig, IngestPipeline
    from irmsia.pipeline.runner import JobRunner
    from irmsia.security.oidc import OIDCVerifier
    from irmsia.storage.base import BlobStore
    from irmsia.usecases.analyze import Analyze
    from irmsia.usecases.ingest import Ingest
    from irmsia.usecases.jobs import Jobs
    from irmsia.usecases.keys import Keys
    from irmsia.usecases.oidc_login import OIDCLogin
    from irmsia.usecases.reports import Reports
    from irmsia.usecases.retrieve import Retrieve
    from irmsia.usecases.search import Search
    from irmsia.usecases.status import SystemStatus

from irmsia.usecases.ledger import LedgerServices, build_ledger_services

log = logging.getLogger(__name__)


@dataclass
class Container:
    """The application's object graph: settings, database, backends and use cases."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    audit: AuditLog
    auth: Authenticator
    accounts: Accounts
    blobs: BlobStore
    keys: KeyProvider
    cipher: EnvelopeCipher
    pipeline: IngestPipeline
    runner: JobRunner
    executor: Executor
    ingest: Ingest
    search: Search
    retrieve: Retrieve
    key_admin: Keys
    ledger: LedgerServices
    analyze: Analyze
    reports: Reports
    jobs: Jobs
    status: SystemStatus
    closers: list[Any] = field(default_factory=list)
    oidc_login: OIDCLogin | None = None  # the portal's "Sign in with …", when OIDC_CLIENT_ID is set

    def resume_jobs(self) -> int:
        """Start-up: clean up after jobs a crash interrupted and queue every pending job again."""
        self.runner.recover()
        pending = self.runner.pending()
        for job_id in pending:
            self.executor.submit(job_id)
        return len(pending)

    def check_ready(self) -> dict[str, str]:
        """Readiness: the database answers and the blob store accepts writes."""
        ping(self.engine)
        self.blobs.check_writable()
        return {"database": "ok", "storage": "ok"}

    def close(self) -> None:
        for closer in reversed(self.closers):
            closer()
        self.engine.dispose()


def build_blob_store(settings: Settings) -> BlobStore:
    """The configured blob store (filesystem by default)."""
    from irmsia.storage import create_blob_store

    if settings.STORAGE_BACKEND == "s3":
        return create_blob_store(
            "s3",
            bucket=settings.S3_BUCKET,
            prefix=settings.S3_PREFIX,
            endpoint_url=settings.S3_ENDPOINT_URL or None,
            region=settings.S3_REGION,
            access_key_id=settings.S3_ACCESS_KEY_ID.get_secret_value() if settings.S3_ACCESS_KEY_ID else None,
            secret_access_key=(
                settings.S3_SECRET_ACCESS_KEY.get_secret_value() if settings.S3_SECRET_ACCESS_KEY else None
            ),
        )
    return create_blob_store("filesystem", root=settings.storage_path)


def build_key_provider(settings: Settings, closers: list[Any]) -> KeyProvider:
    """Local KEKs from ENCRYPTION_KEY and the key ring (default), or Vault Transit."""
    if settings.KEY_PROVIDER == "vault":
        from irmsia.crypto.vault import VaultTransitKeyProvider

        assert settings.VAULT_TOKEN is not None  # checked by Settings
        http = httpx.Client(timeout=10.0)
        closers.append(http.close)
        return VaultTransitKeyProvider(
            settings.VAULT_ADDR,
            settings.VAULT_TOKEN.get_secret_value(),
            settings.VAULT_TRANSIT_KEY,
            http,
            mount=settings.VAULT_TRANSIT_MOUNT,
        )
    from irmsia.crypto.keys import LocalKeyProvider

    return LocalKeyProvider(settings.secret("ENCRYPTION_KEY"), settings.key_ring_path)


def build_anchors(settings: Settings) -> list[Anchor]:
    """The anchors named by BLOCKCHAIN_TYPE, in that order."""
    from irmsia.ledger.anchors import create_anchor

    anchors: list[Anchor] = []
    timeout = settings.LEDGER_ANCHOR_TIMEOUT_SECONDS
    for kind in settings.anchors:
        if kind == "ipfs":
            anchors.append(
                create_anchor("ipfs", host=settings.IPFS_HOST, port=settings.IPFS_PORT, timeout=timeout)
            )
        elif kind == "fabric":
            anchors.append(
                create_anchor(
                    "fabric",
                    gateway_url=settings.FABRIC_GATEWAY_URL,
                    channel=settings.FABRIC_CHANNEL,
                    chaincode=settings.FABRIC_CHAINCODE,
                    timeout=timeout,
                )
            )
        else:
            anchors.append(create_anchor(kind))
    return anchors


def build_ai_config(settings: Settings) -> AIConfig:
    """The AI layer's configuration from the AI_* settings."""
    from irmsia.ai.factory import AIConfig

    return AIConfig(
        provider=settings.AI_PROVIDER,
        routes=settings.AI_ROUTES,
        timeout=settings.AI_TIMEOUT_SECONDS,
        retries=settings.AI_MAX_RETRIES,
        retry_backoff=settings.AI_RETRY_BACKOFF_SECONDS,
        workers=settings.AI_WORKERS,
        device=settings.AI_DEVICE,
        weights_dir=settings.WEIGHTS_DIR,
        onnx_model_card=settings.AI_ONNX_MODEL_CARD,
        onnx_threads=settings.AI_ONNX_THREADS,
        onnx_spinning=settings.AI_ONNX_SPINNING,
        xrv_weights=settings.AI_XRV_WEIGHTS,
        torch_threads=settings.AI_TORCH_THREADS,
        huggingface_model=settings.HUGGINGFACE_MODEL,
        openai_api_key=settings.OPENAI_API_KEY,
        openai_model=settings.OPENAI_MODEL,
        openai_base_url=settings.OPENAI_BASE_URL,
        report_writer=settings.AI_REPORT_WRITER,
    )


def build_deid_options(settings: Settings) -> DeidOptions:
    """The PS3.15 options named in DEID_OPTIONS."""
    from irmsia.domain.deid import DeidOptions

    return DeidOptions(**{name: True for name in settings.DEID_OPTIONS.split(",") if name})


def build_ingest_config(settings: Settings) -> IngestConfig:
    from irmsia.domain.deid import BurnedInPolicy, Region
    from irmsia.domain.render import RenderOptions
    from irmsia.domain.validation import ValidationPolicy
    from irmsia.pipeline.ingest import IngestConfig

    return IngestConfig(
        validation=ValidationPolicy(mode=settings.VALIDATION_MODE, max_bytes=settings.MAX_OBJECT_BYTES),
        burned_in=BurnedInPolicy(settings.BURNED_IN_POLICY),
        mask_regions=tuple(Region(*region) for region in settings.BURNED_IN_MASK_REGIONS),
        render=RenderOptions(bits=16 if settings.RENDER_16BIT else 8, thumbnail_size=settings.THUMBNAIL_SIZE),
        png_level=settings.PNG_COMPRESSION,
    )


def configure_process() -> None:
    """Process-wide settings of third-party libraries, applied once (never per request).

    pydicom quotes invalid element values in its log and warning messages while reading;
    those values can be patient data, so its value validation on read is off (IRMSIA's
    own validation reports problems without values) and its logger is silenced.
    """
    from pydicom import config as pydicom_config

    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def build_oidc_login(
    settings: Settings, verifier: OIDCVerifier, http: httpx.Client, audit: AuditLog, clock: Clock
) -> OIDCLogin | None:
    """The portal's authorization-code sign-in (with OIDC_CLIENT_ID), sharing the verifier's caches."""
    if not settings.OIDC_CLIENT_ID:
        return None
    from irmsia.security.oidc_client import TokenEndpoint
    from irmsia.usecases.oidc_login import OIDCLogin

    secret = settings.OIDC_CLIENT_SECRET
    return OIDCLogin(
        verifier=verifier,
        tokens=TokenEndpoint(
            http,
            client_id=settings.OIDC_CLIENT_ID,
            client_secret=secret.get_secret_value() if secret is not None else None,
            redirect_uri=settings.oidc_redirect_uri,
        ),
        audit=audit,
        clock=clock,
        scopes=settings.OIDC_SCOPES,
        provider_name=settings.OIDC_PROVIDER_NAME,
        post_logout_redirect_uri=settings.oidc_post_logout_redirect_uri,
    )


def build_container(
    settings: Settings, *, clock: Clock = utc_now, upgrade: bool | None = None, executor: str | None = None
) -> Container:
    """Build the object graph; apply migrations when configured to (development default)."""
    configure_process()
    engine = make_engine(settings.database_url)
    if settings.auto_upgrade if upgrade is None else upgrade:
        migrate.upgrade(engine)
    elif not migrate.is_current(engine):
        raise ConfigError("the database schema is not current; run `irmsia db upgrade`")
    sessions = make_session_factory(engine)
    closers: list[Any] = []
    from irmsia.ledger.checkpoint import NoteSigner
    from irmsia.ledger.service import Ledger

    signer = NoteSigner.from_string(settings.secret("LEDGER_SIGNING_KEY").decode())
    log = Ledger(signer, origin=settings.LEDGER_ORIGIN, clock=clock)
    audit = AuditLog(sessions=sessions, clock=clock, log=log)  # every audit record becomes a log entry
    passwords = Passwords(
        PasswordHasher(time_cost=settings.ARGON2_TIME_COST, memory_cost=settings.ARGON2_MEMORY_KIB)
    )
    oidc = None
    oidc_login = None
    if settings.OIDC_ISSUER:
        from irmsia.security.oidc import OIDCVerifier

        http = httpx.Client(timeout=10.0)
        closers.append(http.close)
        oidc = OIDCVerifier(
            settings.OIDC_ISSUER,
            settings.OIDC_AUDIENCE,
            http=http,
            role_claim=settings.OIDC_ROLE_CLAIM,
            role_map=settings.OIDC_ROLE_MAP,
            jwks_url=settings.OIDC_JWKS_URL or None,
            clock=clock,
        )
        oidc_login = build_oidc_login(settings, oidc, http, audit, clock)
    auth = Authenticator(
        sessions=sessions,
        clock=clock,
        passwords=passwords,
        access_tokens=AccessTokens(settings.secret("SECRET_KEY"), settings.ACCESS_TOKEN_TTL_SECONDS),
        refresh_ttl=timedelta(seconds=settings.REFRESH_TOKEN_TTL_SECONDS),
        throttle=ThrottlePolicy(
            settings.LOGIN_MAX_FAILURES, timedelta(seconds=settings.LOGIN_WINDOW_SECONDS)
        ),
        audit=audit,
        oidc=oidc,
    )
    from irmsia.domain.deid import Deidentifier
    from irmsia.pipeline.executors import InlineExecutor, ProcessExecutor, ThreadExecutor
    from irmsia.pipeline.ingest import IngestPipeline
    from irmsia.pipeline.runner import JobRunner
    from irmsia.usecases.ingest import Ingest
    from irmsia.usecases.keys import Keys
    from irmsia.usecases.retrieve import Retrieve
    from irmsia.usecases.search import Search

    blobs = build_blob_store(settings)
    ledger = build_ledger_services(
        sessions=sessions,
        clock=clock,
        audit=audit,
        blobs=blobs,
        ledger=log,
        anchors=build_anchors(settings),
    )
    closers.append(ledger.close)
    keys = build_key_provider(settings, closers)
    cipher = EnvelopeCipher(keys)
    deid_options = build_deid_options(settings)
    pipeline = IngestPipeline(
        sessions=sessions,
        blobs=blobs,
        cipher=cipher,
        deidentifier=Deidentifier(deid_options, settings.secret("PSEUDONYM_KEY")),
        config=build_ingest_config(settings),
        clock=clock,
        audit=audit,
    )
    runner = JobRunner(sessions, blobs, cipher, clock, [pipeline])
    kind = executor or settings.INGEST_EXECUTOR
    pool: Executor
    if kind == "process":
        pool = ProcessExecutor(settings.as_env(), settings.INGEST_WORKERS)
    elif kind == "thread":
        pool = ThreadExecutor(runner, settings.INGEST_WORKERS)
    else:
        pool = InlineExecutor(runner)
    closers.append(pool.close)
    ingest = Ingest(
        sessions=sessions,
        blobs=blobs,
        cipher=cipher,
        executor=pool,
        clock=clock,
        audit=audit,
        max_object_bytes=settings.MAX_OBJECT_BYTES,
    )
    from irmsia.ai.factory import build_runner
    from irmsia.usecases.analyze import Analyze
    from irmsia.usecases.jobs import Jobs
    from irmsia.usecases.reports import Reports
    from irmsia.usecases.status import SystemStatus

    retrieve = Retrieve(sessions=sessions, blobs=blobs, cipher=cipher, audit=audit, clock=clock)
    ai_runner = build_runner(build_ai_config(settings), clock=clock)
    closers.insert(0, ai_runner.close)  # closed last: pipeline workers may still analyse
    analyze = Analyze(
        sessions=sessions, runner=ai_runner, retrieve=retrieve, ledger=ledger.ledger, audit=audit, clock=clock
    )
    if settings.AI_AUTO_ANALYZE:
        pipeline.analyzer = analyze.auto_analyze
    return Container(
        settings=settings,
        engine=engine,
        sessions=sessions,
        clock=clock,
        audit=audit,
        auth=auth,
        accounts=Accounts(sessions=sessions, clock=clock, passwords=passwords, audit=audit),
        blobs=blobs,
        keys=keys,
        cipher=cipher,
        pipeline=pipeline,
        runner=runner,
        executor=pool,
        ingest=ingest,
        search=Search(sessions=sessions, audit=audit),
        retrieve=retrieve,
        key_admin=Keys(sessions=sessions, provider=keys, cipher=cipher, audit=audit),
        ledger=ledger,
        analyze=analyze,
        reports=Reports(
            sessions=sessions,
            analyze=analyze,
            retrieve=retrieve,
            ledger=ledger.ledger,
            audit=audit,
            clock=clock,
        ),
        jobs=Jobs(sessions=sessions, audit=audit, clock=clock, runner=runner, executor=pool),
        status=SystemStatus(sessions=sessions, provider=keys, backend=settings.STORAGE_BACKEND),
        closers=closers,
        oidc_login=oidc_login,
    )
