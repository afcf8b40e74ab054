"""Login, refresh rotation, logout, throttling and token checks through the HTTP API."""

from __future__ import annotations

import jwt
import pytest
from fastapi.testclient import TestClient

from irmsia.bootstrap import Container
from tests.conftest import TEST_PASSWORD, Accounts, FakeClock, count_rows

LOGIN = "/api/v1/auth/login"


def test_login_returns_access_and_refresh_tokens(client: TestClient, accounts: Accounts) -> None:
    accounts.create("alice", "radiologist")
    body = accounts.login("alice")
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == "alice"
    assert me.json()["roles"] == ["radiologist"]
    assert "images:read" in me.json()["permissions"]


def test_wrong_password_and_unknown_user_get_the_same_answer(client: TestClient, accounts: Accounts) -> None:
    accounts.create("alice", "clinician")
    wrong = client.post(LOGIN, data={"username": "alice", "password": "not the password"})
    unknown = client.post(LOGIN, data={"username": "nobody", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert wrong.json()["error"] == "not_authenticated"
    assert wrong.headers["www-authenticate"] == "Bearer"


def test_unknown_user_runs_a_password_verification(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str | None] = []
    original = container.auth.passwords.verify

    def spy(password_hash: str | None, password: str) -> bool:
        calls.append(password_hash)
        return original(password_hash, password)

    monkeypatch.setattr(container.auth.passwords, "verify", spy)
    from irmsia.errors import AuthenticationFailed
    from irmsia.usecases.context import RequestContext

    with pytest.raises(AuthenticationFailed):
        container.auth.login(RequestContext(None, "10.0.0.1"), "ghost", "whatever password")
    assert calls == [None]  # verified against the dummy hash, same argon2 cost as a real user


def test_failed_logins_are_throttled_per_account(
    client: TestClient, accounts: Accounts, clock: FakeClock
) -> None:
    accounts.create("bob", "clinician")
    for _ in range(5):
        assert client.post(LOGIN, data={"username": "bob", "password": "wrong password!"}).status_code == 401
    locked = client.post(LOGIN, data={"username": "bob", "password": TEST_PASSWORD})
    assert locked.status_code == 429
    assert locked.json()["error"] == "too_many_attempts"
    assert int(locked.headers["retry-after"]) > 0
    clock.advance(seconds=301)
    assert client.post(LOGIN, data={"username": "bob", "password": TEST_PASSWORD}).status_code == 200


def test_failed_logins_are_throttled_per_client_address(client: TestClient, accounts: Accounts) -> None:
    accounts.create("carol", "clinician")
    for i in range(5):
        client.post(LOGIN, data={"username": f"spray{i}", "password": "wrong password!"})
    # Same client address, a different (valid) account: the address is locked.
    assert client.post(LOGIN, data={"username": "carol", "password": TEST_PASSWORD}).status_code == 429


def test_disabled_user_cannot_log_in_and_its_tokens_stop_working(
    client: TestClient, accounts: Accounts, container: Container
) -> None:
    user_id = accounts.create("dave", "clinician")
    headers = accounts.headers("dave")
    from tests.support import CLI_CTX

    container.accounts.set_disabled(CLI_CTX, user_id, True)
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 401
    assert client.post(LOGIN, data={"username": "dave", "password": TEST_PASSWORD}).status_code == 401


def test_refresh_rotates_and_reuse_revokes_the_family(client: TestClient, accounts: Accounts) -> None:
    accounts.create("erin", "radiologist")
    first = accounts.login("erin")
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    # The spent token comes back: refused, and the whole family is revoked.
    replay = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    after = client.post("/api/v1/auth/refresh", json={"refresh_token": second.json()["refresh_token"]})
    assert after.status_code == 401


def test_refresh_token_expires(client: TestClient, accounts: Accounts, clock: FakeClock) -> None:
    accounts.create("fay", "radiologist")
    tokens = accounts.login("fay")
    clock.advance(days=8)
    assert (
        client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code
        == 401
    )


def test_logout_revokes_refresh_token(client: TestClient, accounts: Accounts) -> None:
    accounts.create("gus", "clinician")
    tokens = accounts.login("gus")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (
        client.post(
            "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=headers
        ).status_code
        == 204
    )
    assert (
        client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code
        == 401
    )


def test_expired_access_token_is_refused(client: TestClient, accounts: Accounts, clock: FakeClock) -> None:
    accounts.create("hal", "clinician")
    headers = accounts.headers("hal")
    clock.advance(seconds=901)
    response = client.get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "token expired"


def test_forged_and_alg_none_tokens_are_refused(client: TestClient, accounts: Accounts) -> None:
    accounts.create("ivy", "admin")
    token = accounts.login("ivy")["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, "x" * 32, algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    for bad in (forged, unsigned, token[:-3] + "abc", "not-a-jwt"):
        response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad
        assert bad not in response.text


def test_role_change_takes_effect_on_the_next_request(
    client: TestClient, accounts: Accounts, container: Container
) -> None:
    from tests.support import CLI_CTX

    user_id = accounts.create("jo", "auditor")
    headers = accounts.headers("jo")
    assert client.get("/api/v1/audit", headers=headers).status_code == 200
    container.accounts.set_role(CLI_CTX, user_id, "clinician")
    assert client.get("/api/v1/audit", headers=headers).status_code == 403


def test_forced_password_change_limits_the_account(client: TestClient, container: Container) -> None:
    from tests.support import CLI_CTX

    created = container.accounts.create(CLI_CTX, "kim", "admin")
    assert created.one_time_password
    tokens = client.post(LOGIN, data={"username": "kim", "password": created.one_time_password}).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/api/v1/auth/me", headers=headers).json()["password_change_required"] is True
    assert client.get("/api/v1/users", headers=headers).status_code == 403
    change = client.post(
        "/api/v1/auth/password",
        json={"current_password": created.one_time_password, "new_password": "a brand new passphrase"},
        headers=headers,
    )
    assert change.status_code == 204
    assert client.get("/api/v1/users", headers=headers).status_code == 200


def test_login_and_failures_are_audited_without_secrets(
    client: TestClient, accounts: Accounts, container: Container
) -> None:
    accounts.create("lea", "auditor")
    client.post(LOGIN, data={"username": "lea", "password": "a wrong password"})
    accounts.login("lea")
    page = client.get("/api/v1/audit?action=auth.login", headers=accounts.headers("lea")).json()
    outcomes = [item["outcome"] for item in page["items"]]
    assert outcomes.count("failure") == 1
    assert outcomes.count("success") >= 2
    assert "a wrong password" not in str(page)
    assert count_rows(container, "audit_events") >= 3
