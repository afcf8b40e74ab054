"""Bad input gets one JSON error body with a 4xx status: never a 500, never a traceback."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Accounts


def _assert_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}
    assert body["error"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


def test_malformed_json_is_a_400(client: TestClient, role_headers: dict[str, dict[str, str]]) -> None:
    response = client.post(
        "/api/v1/users",
        content=b'{"username": "x", ',
        headers={**role_headers["admin"], "Content-Type": "application/json"},
    )
    _assert_error(response, 400, "invalid_request")


def test_wrong_content_type_is_a_415(client: TestClient, role_headers: dict[str, dict[str, str]]) -> None:
    response = client.post(
        "/api/v1/users",
        content=b"username=x&role=admin",
        headers={**role_headers["admin"], "Content-Type": "text/plain"},
    )
    _assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body",
    [
        {"username": "newbie"},  # missing role
        {"username": "newbie", "role": "superuser"},  # not a role
        {"username": "newbie", "role": "clinician", "is_admin": True},  # extra field
        {"username": ["newbie"], "role": "clinician"},  # wrong type
        {"username": "../../etc", "role": "clinician"},  # not a valid username
        {"username": "shortpw", "role": "clinician", "password": "short"},  # weak password
    ],
)
def test_invalid_fields_are_refused_with_a_clear_message(
    client: TestClient, role_headers: dict[str, dict[str, str]], body: dict[str, object]
) -> None:
    response = client.post("/api/v1/users", json=body, headers=role_headers["admin"])
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"] == "invalid_request"
    assert response.json()["detail"]


def test_validation_errors_do_not_echo_submitted_values(
    client: TestClient, role_headers: dict[str, dict[str, str]]
) -> None:
    response = client.post(
        "/api/v1/users",
        json={"username": "ok-name", "role": "Canaryname^Zelda"},
        headers=role_headers["admin"],
    )
    assert response.status_code == 422
    assert "Canaryname" not in response.text


def test_oversized_body_is_a_413(client: TestClient, role_headers: dict[str, dict[str, str]]) -> None:
    response = client.post(
        "/api/v1/users",
        content=b"x" * (2 << 20),
        headers={**role_headers["admin"], "Content-Type": "application/json"},
    )
    _assert_error(response, 413, "payload_too_large")


def test_oversized_chunked_body_is_a_413(client: TestClient, role_headers: dict[str, dict[str, str]]) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"y" * 65536

    response = client.post(
        "/api/v1/users",
        content=chunks(),
        headers={**role_headers["admin"], "Content-Type": "application/json"},
    )
    _assert_error(response, 413, "payload_too_large")


def test_duplicate_username_is_a_409(client: TestClient, role_headers: dict[str, dict[str, str]]) -> None:
    body = {"username": "twin", "role": "clinician", "password": "a long enough password"}
    assert client.post("/api/v1/users", json=body, headers=role_headers["admin"]).status_code == 201
    _assert_error(client.post("/api/v1/users", json=body, headers=role_headers["admin"]), 409, "conflict")


def test_unknown_route_and_method_use_the_error_body(client: TestClient) -> None:
    _assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")
    _assert_error(client.delete("/healthz"), 405, "method_not_allowed")


def test_unknown_user_id_is_a_404(client: TestClient, role_headers: dict[str, dict[str, str]]) -> None:
    _assert_error(client.get("/api/v1/users/doesnotexist", headers=role_headers["admin"]), 404, "not_found")


def test_malformed_authorization_header_is_a_401(client: TestClient) -> None:
    _assert_error(
        client.get("/api/v1/auth/me", headers={"Authorization": "Basic abc"}), 401, "not_authenticated"
    )
    _assert_error(
        client.get("/api/v1/auth/me", headers={"Authorization": "Bearer "}), 401, "not_authenticated"
    )


def test_login_with_missing_fields_or_json_is_refused(client: TestClient, accounts: Accounts) -> None:
    assert client.post("/api/v1/auth/login", data={"username": "x"}).status_code == 422
    response = client.post("/api/v1/auth/login", json={"username": "x", "password": "y"})
    assert response.status_code in (415, 422)


def test_last_admin_cannot_be_disabled_or_demoted(client: TestClient, accounts: Accounts) -> None:
    admin_id = accounts.create("solo", "admin")
    headers = accounts.headers("solo")
    _assert_error(
        client.patch(f"/api/v1/users/{admin_id}", json={"disabled": True}, headers=headers), 409, "conflict"
    )
    _assert_error(
        client.patch(f"/api/v1/users/{admin_id}", json={"role": "auditor"}, headers=headers), 409, "conflict"
    )


def test_request_id_is_kept_when_well_formed_and_replaced_otherwise(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert replaced != "bad id with spaces" and len(replaced) == 32


def test_security_headers_are_set(client: TestClient) -> None:
    headers = client.get("/healthz").headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"


def test_readyz_reports_database_and_storage(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "storage": "ok"}
