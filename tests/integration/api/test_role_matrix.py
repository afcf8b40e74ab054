"""Every endpoint and every role (and anonymous): allowed or denied, exactly as the policy says.

``MATRIX`` must list every route the app exposes; ``test_matrix_covers_every_route`` fails
when an endpoint is added without deciding who may call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from irmsia.bootstrap import Container
from irmsia.usecases.ingest import IncomingFile
from tests.conftest import TEST_PASSWORD, Accounts
from tests.factories import make_ct, to_bytes
from tests.support import CLI_CTX

ROLES = ("admin", "radiologist", "clinician", "uploader", "auditor")
READERS = frozenset({"admin", "radiologist", "clinician"})
UPLOADERS = frozenset({"admin", "radiologist", "uploader"})
ADMIN = frozenset({"admin"})
LEDGER_READERS = frozenset({"admin", "auditor"})
ANON = "anonymous"
EVERYONE = frozenset({*ROLES, ANON})
AUTHENTICATED = frozenset(ROLES)


@dataclass
class World:
    """Things the requests refer to: a target account and fresh tokens."""

    client: TestClient
    accounts: Accounts
    target_id: str
    ids: dict[str, str]
    counter: list[int] = field(default_factory=lambda: [0])

    def unique(self, prefix: str) -> str:
        self.counter[0] += 1
        return f"{prefix}{self.counter[0]}"

    def refresh_token(self, who: str) -> str:
        return self.accounts.login(f"{who}1" if who != ANON else "admin1")["refresh_token"]


Request = Callable[[World, str], dict[str, Any]]


@dataclass(frozen=True)
class Entry:
    method: str
    path: str
    allowed: frozenset[str]
    request: Request = lambda world, who: {}


MATRIX: list[Entry] = [
    Entry("GET", "/healthz", EVERYONE),
    Entry("GET", "/readyz", EVERYONE),
    Entry(
        "POST",
        "/api/v1/auth/login",
        EVERYONE,
        lambda world, who: {"data": {"username": "admin1", "password": TEST_PASSWORD}},
    ),
    Entry(
        "POST",
        "/api/v1/auth/refresh",
        EVERYONE,
        lambda world, who: {"json": {"refresh_token": world.refresh_token(who)}},
    ),
    Entry("POST", "/api/v1/auth/logout", AUTHENTICATED),
    Entry("GET", "/api/v1/auth/me", AUTHENTICATED),
    Entry(
        "POST",
        "/api/v1/auth/password",
        AUTHENTICATED,
        lambda world, who: {
            "json": {"current_password": TEST_PASSWORD, "new_password": "another long passphrase"}
        },
    ),
    Entry(
        "POST",
        "/api/v1/auth/register",
        frozenset({"admin"}),
        lambda world, who: {"json": {"username": world.unique("reg"), "role": "clinician"}},
    ),
    Entry("GET", "/api/v1/users", frozenset({"admin"})),
    Entry(
        "POST",
        "/api/v1/users",
        frozenset({"admin"}),
        lambda world, who: {"json": {"username": world.unique("new"), "role": "uploader"}},
    ),
    Entry("GET", "/api/v1/users/{user_id}", frozenset({"admin"})),
    Entry(
        "PATCH",
        "/api/v1/users/{user_id}",
        frozenset({"admin"}),
        lambda world, who: {"json": {"role": "clinician"}},
    ),
    Entry("POST", "/api/v1/users/{user_id}/reset-password", frozenset({"admin"})),
    Entry("GET", "/api/v1/audit", frozenset({"admin", "auditor"})),
    Entry(
        "POST",
        "/api/v1/dicom/upload",
        UPLOADERS,
        lambda world, who: {
            "files": [("files", ("a.dcm", to_bytes(make_ct(phi_extras=False)), "application/dicom"))]
        },
    ),
    Entry("GET", "/api/v1/jobs/{job_id}", UPLOADERS),
    Entry("GET", "/api/v1/jobs", ADMIN),
    Entry("POST", "/api/v1/jobs/{job_id}/retry", ADMIN),  # the job succeeded: 409 for admins
    Entry("POST", "/api/v1/jobs/{job_id}/discard", ADMIN),
    Entry("GET", "/api/v1/patients", READERS),
    Entry("GET", "/api/v1/studies", READERS),
    Entry("GET", "/api/v1/studies/{study_id}", READERS),
    Entry("DELETE", "/api/v1/studies/{study_id}", ADMIN),
    Entry("GET", "/api/v1/series", READERS),
    Entry("GET", "/api/v1/series/{series_id}", READERS),
    Entry("GET", "/api/v1/images", READERS),
    Entry("GET", "/api/v1/images/{image_id}", READERS),
    Entry("DELETE", "/api/v1/images/{image_id}", ADMIN),
    Entry("GET", "/api/v1/images/{image_id}/dicom", READERS),
    Entry("GET", "/api/v1/images/{image_id}/frames/{frame}", READERS),
    Entry("GET", "/api/v1/images/{image_id}/thumbnail", READERS),
    Entry("GET", "/api/v1/vault/{kind}/{pseudonym}", ADMIN),
    Entry("GET", "/api/v1/quarantine", ADMIN),
    Entry("POST", "/api/v1/quarantine/{image_id}/release", ADMIN),
    Entry("GET", "/api/v1/keys", ADMIN),
    Entry("POST", "/api/v1/keys/rotate", ADMIN),
    Entry("POST", "/api/v1/ai/analyze/{image_id}", READERS),
    Entry("GET", "/api/v1/ai/results/image/{image_id}", READERS),
    Entry("GET", "/api/v1/ai/results/study/{study_id}", READERS),
    Entry("GET", "/api/v1/ai/results/patient/{pseudonym}", READERS),
    Entry("GET", "/api/v1/reports/{study_id}", READERS),
    Entry("GET", "/api/v1/reports/{study_id}/{fmt}", READERS),
    Entry(
        "POST",
        "/api/v1/reports/{study_id}/sign",
        frozenset({"admin", "radiologist"}),
        lambda world, who: {"json": {"decision": "confirm"}},
    ),
    Entry("GET", "/api/v1/ledger/public-key", EVERYONE),
    Entry("GET", "/api/v1/ledger/checkpoint", LEDGER_READERS),
    Entry("GET", "/api/v1/ledger/checkpoints", LEDGER_READERS),
    Entry(
        "GET", "/api/v1/ledger/proof/inclusion", LEDGER_READERS, lambda world, who: {"params": {"index": 0}}
    ),
    Entry(
        "GET", "/api/v1/ledger/proof/consistency", LEDGER_READERS, lambda world, who: {"params": {"first": 1}}
    ),
    Entry("GET", "/api/v1/ledger/receipts/{object_id}", LEDGER_READERS),
    Entry("GET", "/api/v1/ledger/anchors", LEDGER_READERS),
    Entry("POST", "/api/v1/ledger/anchors", ADMIN),
    Entry("POST", "/api/v1/ledger/verify", LEDGER_READERS, lambda world, who: {"json": {}}),
    Entry("GET", "/api/v1/ledger/verification", LEDGER_READERS),
    Entry("GET", "/api/v1/blockchain/images/{image_id}/hash", LEDGER_READERS),
    Entry("GET", "/api/v1/blockchain/images/{image_id}/access-logs", LEDGER_READERS),
]


def _dicom_object_id(container: Container, image_id: str) -> str:
    from sqlalchemy import select

    from irmsia.db.imaging import StoredObject

    with container.sessions() as session:
        return str(
            session.scalar(
                select(StoredObject.id).where(
                    StoredObject.instance_id == image_id, StoredObject.kind == "dicom"
                )
            )
        )


# Framework pages that carry no data.
PUBLIC_DOCS = {
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/openapi.json"),
    ("GET", "/docs/oauth2-redirect"),
}


def _served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app's router dispatches, hidden from the schema or not.

    Recent FastAPI (0.165 here) keeps each included router as one wrapper in ``app.routes``
    (no ``path``, no ``methods``), so walking ``app.routes`` alone sees only the docs pages;
    ``iter_route_contexts`` flattens those wrappers, nested ones included, into the effective
    routes with their full prefixed paths. Older FastAPI copied every route into ``app.routes``.
    tests/integration/api/test_route_discovery.py checks that this sees hidden routes.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI without included-router wrappers
        flat: list[Any] = list(app.routes)
    else:
        flat = list(iter_route_contexts(app.routes))
    routes = set()
    for route in flat:
        for method in (getattr(route, "methods", None) or set()) - {"HEAD", "OPTIONS"}:
            routes.add((method, getattr(route, "path", "")))
    return routes


def _schema_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) in the app's OpenAPI schema."""
    return {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}


def _app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app serves: the OpenAPI schema plus routes hidden from it."""
    return _schema_routes(app) | _served_routes(app)


def _portal_routes() -> set[tuple[str, str]]:
    """The portal's pages; tests/integration/portal/test_role_matrix.py has their matrix."""
    from irmsia.portal.web import FALLBACK, ROUTERS

    routes = set()
    for router in (*ROUTERS, FALLBACK):
        for route in router.routes:
            for method in (getattr(route, "methods", None) or set()) - {"HEAD", "OPTIONS"}:
                routes.add((method, getattr(route, "path", "")))
    return routes


def test_matrix_covers_every_route(app: FastAPI) -> None:
    listed = {(entry.method, entry.path) for entry in MATRIX}
    exposed = _app_routes(app) - PUBLIC_DOCS - _portal_routes()
    assert exposed - listed == set(), "new endpoints need a row in MATRIX"
    assert listed - exposed == set(), "MATRIX lists endpoints the app no longer has"


def test_public_docs_are_served(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200


@pytest.mark.parametrize("entry", MATRIX, ids=lambda e: f"{e.method} {e.path}")
def test_every_role_gets_exactly_what_the_policy_allows(
    entry: Entry,
    client: TestClient,
    accounts: Accounts,
    role_headers: dict[str, dict[str, str]],
    container: Container,
) -> None:
    batch = container.ingest.submit(CLI_CTX, [IncomingFile(data=[to_bytes(make_ct())], label="1")])
    result = batch.files[0].result
    ids = {
        "user_id": accounts.create("target1", "clinician"),
        "job_id": batch.files[0].job_id or "",
        "study_id": result["study_id"],
        "series_id": result["series_id"],
        "image_id": result["image_id"],
        "frame": "0",
        "fmt": "pdf",
        "kind": "patient",
        "pseudonym": result["patient_pseudonym"],
        "object_id": _dicom_object_id(container, result["image_id"]),
    }
    world = World(client=client, accounts=accounts, target_id=ids["user_id"], ids=ids)
    for who in (*ROLES, ANON):
        headers = role_headers.get(who, {})
        path = entry.path
        for name, value in ids.items():
            path = path.replace("{" + name + "}", value)
        response = client.request(entry.method, path, headers=headers, **entry.request(world, who))
        if who in entry.allowed:
            assert response.status_code not in (401, 403), f"{who} was refused: {response.text}"
            assert response.status_code < 500, response.text
        elif who == ANON:
            assert response.status_code == 401, f"anonymous got {response.status_code}"
            assert response.json()["error"] == "not_authenticated"
        else:
            assert response.status_code == 403, f"{who} got {response.status_code}"
            assert response.json()["error"] == "forbidden"


def test_denied_requests_are_audited(client: TestClient, role_headers: dict[str, dict[str, str]]) -> None:
    assert client.get("/api/v1/users", headers=role_headers["clinician"]).status_code == 403
    page = client.get("/api/v1/audit?action=access.denied", headers=role_headers["auditor"]).json()
    assert page["total"] == 1
    event = page["items"][0]
    assert event["actor_role"] == "clinician"
    assert event["outcome"] == "denied"
    assert event["detail"] == {"method": "GET", "route": "/api/v1/users"}
