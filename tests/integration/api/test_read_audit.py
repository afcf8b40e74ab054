"""Every read of patient data (and every admin read) through the API writes one audit record.

Each row names a GET route, the role that calls it, and the record it must leave: action,
resource type, opaque resource id and detail. The record is found by the request id the response
carries, so a record written by some other request cannot satisfy a row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from irmsia.api.middleware import REQUEST_ID_HEADER
from irmsia.bootstrap import Container
from irmsia.config import Settings
from irmsia.db.imaging import StoredObject, Study
from irmsia.db.models import AuditEvent
from irmsia.usecases.ingest import IncomingFile
from irmsia.usecases.verify import VerifyScope
from tests.conftest import Accounts, make_settings
from tests.factories import make_ct, to_bytes
from tests.integration.api.test_role_matrix import MATRIX
from tests.support import CLI_CTX

pytestmark = pytest.mark.db


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    # The mock provider gives an AI result (so reports exist); 16-bit PNGs cover ?bits=16.
    return make_settings(tmp_path / "data", db_url, AI_PROVIDER="mock", RENDER_16BIT="true")


@dataclass(frozen=True)
class Read:
    path: str  # ``{name}`` is filled from the stored study's ids
    role: str
    action: str
    resource_type: str | None
    resource_id: str | None  # a name from the ids, or None for lists
    detail: dict[str, Any] = field(default_factory=dict)  # values may name ids as "{name}"

    def fill(self, ids: dict[str, str]) -> Read:
        def sub(value: Any) -> Any:
            return value.format(**ids) if isinstance(value, str) else value

        return Read(
            path=self.path.format(**ids),
            role=self.role,
            action=self.action,
            resource_type=self.resource_type,
            resource_id=ids[self.resource_id] if self.resource_id else None,
            detail={key: sub(value) for key, value in self.detail.items()},
        )


READS = [
    Read("/api/v1/patients", "clinician", "patient.list", "patient", None, {"returned": 1}),
    Read("/api/v1/patients?pseudonym={pseudonym}", "clinician", "patient.list", "patient", None),
    Read("/api/v1/studies", "clinician", "study.list", "study", None, {"returned": 1}),
    Read("/api/v1/studies/{study_id}", "radiologist", "study.read", "study", "study_id"),
    Read("/api/v1/series", "clinician", "series.list", "series", None, {"returned": 1}),
    Read("/api/v1/series/{series_id}", "clinician", "series.read", "series", "series_id"),
    Read("/api/v1/images", "radiologist", "image.list", "image", None, {"returned": 1}),
    Read("/api/v1/images/{image_id}", "clinician", "image.read", "image", "image_id"),
    Read("/api/v1/images/{image_id}/dicom", "radiologist", "image.download.dicom", "image", "image_id"),
    Read(
        "/api/v1/images/{image_id}/frames/0",
        "clinician",
        "image.download.png",
        "image",
        "image_id",
        {"frame": 0},
    ),
    Read(
        "/api/v1/images/{image_id}/frames/0?bits=16",
        "clinician",
        "image.download.png16",
        "image",
        "image_id",
        {"frame": 0},
    ),
    Read("/api/v1/images/{image_id}/thumbnail", "clinician", "image.download.thumbnail", "image", "image_id"),
    Read("/api/v1/ai/results/image/{image_id}", "clinician", "ai.read", "image", "image_id", {"returned": 1}),
    Read("/api/v1/ai/results/study/{study_id}", "radiologist", "ai.read", "study", "study_id"),
    Read("/api/v1/ai/results/patient/{pseudonym}", "clinician", "ai.read", "patient", "pseudonym"),
    *(
        Read(
            f"/api/v1/reports/{{study_id}}{suffix}",
            "clinician",
            "report.read",
            "study",
            "study_id",
            {"format": fmt},  # one record: it covers the thumbnails the report shows
        )
        for suffix, fmt in (("", "json"), ("/pdf", "pdf"), ("/sr", "sr"), ("/fhir", "fhir"))
    ),
    Read("/api/v1/vault/patient/{pseudonym}", "admin", "vault.read", "patient", "pseudonym", {"found": True}),
    Read(
        "/api/v1/vault/accession/{accession}",
        "admin",
        "vault.read",
        "accession",
        "accession",
        {"found": True},
    ),
    # Ledger reads are audited as reads of the ledger, not as accesses to the image (so an image's
    # access log lists who read the image, not who looked at its log); the ids go in the detail.
    Read(
        "/api/v1/blockchain/images/{image_id}/hash",
        "auditor",
        "ledger.read",
        "ledger",
        None,
        {"view": "image_hashes", "image_id": "{image_id}"},
    ),
    Read(
        "/api/v1/blockchain/images/{image_id}/access-logs",
        "auditor",
        "ledger.read",
        "ledger",
        None,
        {"view": "image_access_log", "image_id": "{image_id}"},
    ),
    Read(
        "/api/v1/ledger/receipts/{object_id}",
        "auditor",
        "ledger.read",
        "ledger",
        None,
        {"view": "receipt", "object_id": "{object_id}"},
    ),
    Read("/api/v1/ledger/checkpoint", "auditor", "ledger.read", "ledger", None, {"view": "checkpoint"}),
    Read("/api/v1/ledger/checkpoints", "admin", "ledger.read", "ledger", None, {"view": "checkpoints"}),
    Read(
        "/api/v1/ledger/proof/inclusion?index=0",
        "auditor",
        "ledger.read",
        "ledger",
        None,
        {"view": "inclusion_proof", "index": 0},
    ),
    Read(
        "/api/v1/ledger/proof/consistency?first=1",
        "auditor",
        "ledger.read",
        "ledger",
        None,
        {"view": "consistency_proof", "first": 1},
    ),
    Read("/api/v1/ledger/anchors", "auditor", "ledger.read", "ledger", None, {"view": "anchors"}),
    Read("/api/v1/ledger/verification", "auditor", "ledger.read", "ledger", None, {"view": "verification"}),
    # Admin reads.
    Read("/api/v1/users", "admin", "user.list", "user", None),
    Read("/api/v1/users/{user_id}", "admin", "user.read", "user", "user_id"),
    Read("/api/v1/keys", "admin", "keys.status", "key", "key_id"),
    Read("/api/v1/quarantine", "admin", "quarantine.list", "image", None, {"returned": 0}),
    Read("/api/v1/jobs", "admin", "job.list", "job", None, {"returned": 1}),
    Read("/api/v1/audit", "auditor", "audit.search", None, None),
]


@pytest.fixture
def stored(container: Container, accounts: Accounts) -> dict[str, str]:
    """One ingested CT with an AI result and a verification run; the ids the rows refer to."""
    batch = container.ingest.submit(CLI_CTX, [IncomingFile(data=[to_bytes(make_ct())], label="1")])
    result = batch.files[0].result
    assert result is not None, batch.files[0].detail
    container.analyze.analyze(CLI_CTX, result["image_id"])
    container.ledger.verification.run(CLI_CTX, VerifyScope(), trigger="cli")
    with container.sessions() as session:
        study = session.get(Study, result["study_id"])
        assert study is not None and study.accession_pseudonym
        object_id = session.scalar(
            select(StoredObject.id).where(
                StoredObject.instance_id == result["image_id"], StoredObject.kind == "dicom"
            )
        )
    return {
        "study_id": result["study_id"],
        "series_id": result["series_id"],
        "image_id": result["image_id"],
        "pseudonym": result["patient_pseudonym"],
        "accession": study.accession_pseudonym,
        "object_id": str(object_id),
        "user_id": accounts.create("target1", "clinician"),
        "key_id": container.key_admin.provider.current_key_id(),
    }


def _records_of(container: Container, request_id: str) -> list[AuditEvent]:
    with container.sessions() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.id)
            )
        )


@pytest.mark.parametrize("row", READS, ids=lambda r: f"{r.role} {r.path}")
def test_every_read_writes_one_audit_record(
    row: Read,
    client: TestClient,
    container: Container,
    role_headers: dict[str, dict[str, str]],
    stored: dict[str, str],
) -> None:
    read = row.fill(stored)
    response = client.get(read.path, headers=role_headers[read.role])
    assert response.status_code == 200, response.text

    records = _records_of(container, response.headers[REQUEST_ID_HEADER])
    (record,) = records  # exactly one record per read
    assert record.action == read.action
    assert (record.resource_type, record.resource_id) == (read.resource_type, read.resource_id)
    assert record.actor_role == read.role
    assert record.actor_name == f"{read.role}1"
    assert record.outcome == "success"
    detail = json.loads(record.detail)
    assert {key: detail.get(key) for key in read.detail} == read.detail


def test_the_table_covers_every_get_route_of_the_api() -> None:
    # Reads that are not audited on purpose: nothing of patients or accounts in them.
    unaudited = {
        "/healthz",
        "/readyz",
        "/api/v1/auth/me",  # the caller's own account
        "/api/v1/ledger/public-key",  # public: the verifier key
        "/api/v1/jobs/{job_id}",  # the job's id comes from an upload: test_job_status_reads_are_audited
    }
    paths = [row.path.split("?")[0] for row in READS]
    missing = []
    for entry in MATRIX:
        if entry.method != "GET" or entry.path in unaudited:
            continue
        pattern = re.compile("^" + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(entry.path)) + "$")
        if not any(pattern.match(path) for path in paths):
            missing.append(entry.path)
    assert missing == [], "add a row to READS (or say why the read is not audited)"


def test_job_status_reads_are_audited(
    client: TestClient, container: Container, role_headers: dict[str, dict[str, str]]
) -> None:
    batch = container.ingest.submit(CLI_CTX, [IncomingFile(data=[to_bytes(make_ct())], label="1")])
    job_id = batch.files[0].job_id
    assert job_id
    response = client.get(f"/api/v1/jobs/{job_id}", headers=role_headers["admin"])
    assert response.status_code == 200, response.text
    records = _records_of(container, response.headers[REQUEST_ID_HEADER])
    assert [(r.resource_id, r.actor_role) for r in records] == [(job_id, "admin")]
