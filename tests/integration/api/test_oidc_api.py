"""Bearer tokens from a configured OIDC provider (a real loopback IdP) reach the API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from irmsia.api.app import create_app
from irmsia.bootstrap import build_container
from tests.conftest import FakeClock, make_settings
from tests.unit.security.test_oidc import REALM_PATH, FakeIdP, IdPHandler, IdPServer, public_jwk, sign

AUDIENCE = "api://irmsia"


@pytest.fixture
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def idp(signing_key: rsa.RSAPrivateKey) -> Iterator[FakeIdP]:
    state = FakeIdP(jwks={"keys": [public_jwk(signing_key, "k1", use="sig")]})
    server = IdPServer(("127.0.0.1", 0), IdPHandler)
    server.idp = state
    state.issuer = f"http://127.0.0.1:{server.server_address[1]}{REALM_PATH}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def oidc_client(tmp_path: Path, db_url: str, idp: FakeIdP, clock: FakeClock) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "data",
        db_url,
        OIDC_ISSUER=idp.issuer,
        OIDC_AUDIENCE=AUDIENCE,
        OIDC_ROLE_CLAIM="realm_access.roles",
        OIDC_ROLE_MAP='{"Radiology": "radiologist", "Audit": "auditor"}',
    )
    container = build_container(settings, clock=clock)
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        yield client
    container.close()


def _token(idp: FakeIdP, key: rsa.RSAPrivateKey, clock: FakeClock, roles: list[str], **extra: Any) -> str:
    now = int(clock().timestamp())
    claims = {
        "iss": idp.issuer,
        "aud": AUDIENCE,
        "sub": "kc-user-1",
        "iat": now,
        "exp": now + 300,
        "preferred_username": "dr.keycloak",
        "realm_access": {"roles": roles},
        **extra,
    }
    return sign(key, claims, kid="k1")


def test_oidc_token_maps_roles_and_is_authorised_by_them(
    oidc_client: TestClient, idp: FakeIdP, signing_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    headers = {"Authorization": f"Bearer {_token(idp, signing_key, clock, ['Radiology', 'offline_access'])}"}
    me = oidc_client.get("/api/v1/auth/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["roles"] == ["radiologist"]
    assert me.json()["method"] == "oidc"
    assert me.json()["id"] == "oidc:kc-user-1"
    assert oidc_client.get("/api/v1/audit", headers=headers).status_code == 403


def test_oidc_access_is_audited_under_the_subject(
    oidc_client: TestClient, idp: FakeIdP, signing_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    auditor = {"Authorization": f"Bearer {_token(idp, signing_key, clock, ['Audit'], sub='kc-aud')}"}
    assert oidc_client.get("/api/v1/audit", headers=auditor).status_code == 200
    page = oidc_client.get("/api/v1/audit?action=audit.search", headers=auditor).json()
    assert page["items"][0]["actor_id"] == "oidc:kc-aud"
    assert page["items"][0]["actor_role"] == "auditor"


def test_oidc_token_without_a_platform_role_is_refused(
    oidc_client: TestClient, idp: FakeIdP, signing_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    headers = {"Authorization": f"Bearer {_token(idp, signing_key, clock, ['offline_access'])}"}
    response = oidc_client.get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 401


def test_expired_or_foreign_oidc_tokens_are_refused(
    oidc_client: TestClient, idp: FakeIdP, signing_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = _token(idp, stranger, clock, ["Radiology"])
    expired = _token(idp, signing_key, clock, ["Radiology"], exp=int(clock().timestamp()) - 3600)
    for token in (forged, expired):
        response = oidc_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert token not in response.text


def test_idp_down_gives_a_clear_502_not_500(
    tmp_path: Path, db_url: str, clock: FakeClock, signing_key: rsa.RSAPrivateKey
) -> None:
    issuer = "http://127.0.0.1:9/realms/x"  # discard port: nothing answers
    settings = make_settings(tmp_path / "d2", db_url, OIDC_ISSUER=issuer, OIDC_AUDIENCE=AUDIENCE)
    container = build_container(settings, clock=clock)
    token = _token(FakeIdP(jwks={}, issuer=issuer), signing_key, clock, ["Radiology"])
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    container.close()
    assert response.status_code == 502
    assert response.json()["error"] == "external_service_error"
    assert token not in response.text
