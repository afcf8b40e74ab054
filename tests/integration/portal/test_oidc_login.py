"""Signing in to the portal through an OpenID provider: authorization code with PKCE.

The provider is a real HTTP server on loopback (``tests.oidc_provider``) that serves
discovery, a JWKS, an authorize form and a token endpoint checking the client secret, the
redirect URI and the PKCE verifier. The portal runs in a TestClient per browser; the
provider and the app share the test's clock, so expiry is moved by hand, never waited for.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from sqlalchemy import select

from irmsia.api.app import create_app
from irmsia.bootstrap import Container, build_container
from irmsia.config import Settings
from irmsia.db.auditlog import AuditFilter
from irmsia.db.jobs import Job
from irmsia.portal.sessions import SESSION_COOKIE
from irmsia.portal.views.auth import OIDC_COOKIE
from irmsia.portal.web import install
from irmsia.security.oidc_client import s256
from tests.conftest import FakeClock, make_settings
from tests.integration.portal.conftest import Browser, BrowserFactory, World, csrf_of
from tests.integration.portal.test_role_matrix import MATRIX
from tests.oidc_provider import LoopbackProvider, User, running
from tests.support import CLI_CTX

CLIENT_ID = "irmsia-portal"
CLIENT_SECRET = "loopback-client-secret-with-&-and-:"
AUDIENCE = "api://irmsia"
ORIGIN = "http://testserver"
REDIRECT_URI = f"{ORIGIN}/portal/oidc/callback"
ROLE_MAP = {"Radiology": "radiologist", "Audit": "auditor", "Admins": "admin"}


def _users() -> dict[str, User]:
    return {
        # Roles in the ID token (Entra ID app roles; Keycloak with "add to ID token").
        "rad": User(sub="kc-rad", username="dr.rad", id_claims={"realm_access": {"roles": ["Radiology"]}}),
        # Roles only in the access token (Keycloak's default realm-roles mapper).
        "aud": User(sub="kc-aud", username="audrey", access_claims={"realm_access": {"roles": ["Audit"]}}),
        # Signed in at the provider, but no role that maps to an IRMSIA role.
        "none": User(
            sub="kc-none", username="no.roles", id_claims={"realm_access": {"roles": ["offline_access"]}}
        ),
    }


@pytest.fixture
def provider(clock: FakeClock) -> Iterator[LoopbackProvider]:
    idp = LoopbackProvider(
        clock=clock,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
        audience=AUDIENCE,
        users=_users(),
    )
    with running(idp):
        yield idp


def oidc_settings(data_dir: Path, db_url: str, issuer: str, **overrides: str) -> Settings:
    values = {
        "INGEST_EXECUTOR": "inline",
        "BURNED_IN_POLICY": "quarantine",  # as the portal's other tests: the world has one to review
        "OIDC_ISSUER": issuer,
        "OIDC_AUDIENCE": AUDIENCE,
        "OIDC_ROLE_CLAIM": "realm_access.roles",
        "OIDC_ROLE_MAP": json.dumps(ROLE_MAP),
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_PROVIDER_NAME": "Keycloak",
        "PUBLIC_URL": ORIGIN,
        **overrides,
    }
    return make_settings(data_dir, db_url, **values)


@pytest.fixture
def settings(tmp_path: Path, db_url: str, provider: LoopbackProvider) -> Settings:
    return oidc_settings(tmp_path / "data", db_url, provider.issuer)


@pytest.fixture
def visitor(app: FastAPI) -> Iterator[Browser]:
    browser = Browser(app)
    yield browser
    browser.close()


def start(visitor: Browser, next_path: str = "") -> str:
    """Click "Sign in with Keycloak": the provider URL the portal redirects to."""
    response = visitor.get("/portal/oidc/login" + (f"?next={quote(next_path)}" if next_path else ""))
    assert response.status_code == 303, response.text
    return response.headers["location"]


def sso(visitor: Browser, provider: LoopbackProvider, user: str, next_path: str = "") -> httpx.Response:
    """The whole round trip: portal → provider's form → callback. Returns the callback's answer."""
    return visitor.get(provider.sign_in(start(visitor, next_path), user))


def _events(container: Container, action: str) -> list[Any]:
    return list(container.audit.search(CLI_CTX, AuditFilter(action=action)).items)


def _login_failures(container: Container) -> list[str]:
    return [
        json.loads(e.detail)["reason"]
        for e in _events(container, "auth.login")
        if e.outcome != "success" and json.loads(e.detail).get("method") == "oidc"
    ]


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


# --- the login page and the authorization request ---------------------------------------------
def test_login_page_offers_sign_in_with_the_provider(visitor: Browser) -> None:
    page = visitor.get("/portal/login?next=/portal/audit")

    assert page.status_code == 200
    assert "Sign in with Keycloak" in page.text
    assert 'href="/portal/oidc/login?next=%2Fportal%2Faudit"' in page.text
    assert 'name="password"' in page.text  # local accounts still sign in with the form


def test_authorization_request_carries_state_nonce_and_an_s256_challenge_only(
    visitor: Browser, provider: LoopbackProvider
) -> None:
    response = visitor.get("/portal/oidc/login?next=/portal/audit")
    location = response.headers["location"]
    query = _query(location)

    assert location.startswith(provider.authorize_url + "?")
    assert query["response_type"] == "code"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == REDIRECT_URI
    assert query["scope"] == "openid profile email"
    assert query["code_challenge_method"] == "S256"
    assert len(query["state"]) >= 43 and len(query["nonce"]) >= 43 and query["state"] != query["nonce"]
    assert len(query["code_challenge"]) == 43  # base64url of a SHA-256 digest
    # The page to come back to stays on the server; nothing but random values leaves.
    assert set(query) == {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    }
    assert "audit" not in location
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{OIDC_COOKIE}=")
    assert "Path=/portal/oidc" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert query["state"] not in cookie and query["nonce"] not in cookie


# --- happy paths ------------------------------------------------------------------------------
def test_radiologist_signs_in_with_roles_from_the_id_token(
    visitor: Browser, provider: LoopbackProvider, container: Container
) -> None:
    callback = sso(visitor, provider, "rad")

    assert callback.status_code == 303
    assert callback.headers["location"] == "/portal/"
    assert SESSION_COOKIE in visitor.http.cookies
    assert OIDC_COOKIE not in visitor.http.cookies  # the pre-login cookie is spent
    assert visitor.get("/portal/").headers["location"] == "/portal/worklist"
    worklist = visitor.get("/portal/worklist")
    assert worklist.status_code == 200
    assert "dr.rad" in worklist.text and "radiologist" in worklist.text
    assert visitor.get("/portal/admin").status_code == 403
    assert visitor.get("/portal/audit").status_code == 403
    [login] = [e for e in _events(container, "auth.login") if e.outcome == "success"]
    assert (login.actor_id, login.actor_role, login.resource_id) == (
        "oidc:kc-rad",
        "radiologist",
        "oidc:kc-rad",
    )
    assert json.loads(login.detail) == {"method": "oidc"}


def test_confidential_client_authenticates_with_basic_and_redeems_the_code_with_its_verifier(
    visitor: Browser, provider: LoopbackProvider
) -> None:
    assert sso(visitor, provider, "rad").status_code == 303

    [authorize] = [q for q in provider.authorize_queries if "code_challenge" in q][:1]
    [form] = provider.token_forms
    assert form["grant_type"] == "authorization_code"
    assert form["redirect_uri"] == REDIRECT_URI
    assert s256(form["code_verifier"]) == authorize["code_challenge"]
    assert 43 <= len(form["code_verifier"]) <= 128
    assert "client_secret" not in form and "client_id" not in form
    assert provider.token_auth[0] is not None and provider.token_auth[0].startswith("Basic ")


def test_auditor_gets_roles_from_the_access_token_and_lands_on_the_audit_log(
    visitor: Browser, provider: LoopbackProvider
) -> None:
    assert sso(visitor, provider, "aud").status_code == 303

    assert visitor.get("/portal/").headers["location"] == "/portal/audit"
    assert visitor.get("/portal/audit").status_code == 200
    assert visitor.get("/portal/worklist").status_code == 403
    assert visitor.get("/portal/upload").status_code == 403


def test_the_requested_page_is_restored_after_sign_in(visitor: Browser, provider: LoopbackProvider) -> None:
    callback = sso(visitor, provider, "aud", next_path="/portal/audit?action=auth.login")

    assert callback.headers["location"] == "/portal/audit?action=auth.login"


def test_foreign_next_targets_are_dropped(visitor: Browser, provider: LoopbackProvider) -> None:
    callback = sso(visitor, provider, "aud", next_path="https://evil.example.test/portal/")

    assert callback.headers["location"] == "/portal/"


def test_a_public_client_sends_its_id_and_no_secret(
    tmp_path: Path, db_url: str, clock: FakeClock, provider: LoopbackProvider
) -> None:
    provider.client_secret = None
    settings = oidc_settings(tmp_path / "public", db_url, provider.issuer, OIDC_CLIENT_SECRET="")
    assert settings.OIDC_CLIENT_SECRET is None
    container = build_container(settings, clock=clock)
    app = create_app(container=container)
    install(app)
    public = Browser(app)
    try:
        assert sso(public, provider, "rad").status_code == 303
        assert public.get("/portal/worklist").status_code == 200
    finally:
        public.close()
        container.close()
    assert provider.token_forms[0]["client_id"] == CLIENT_ID
    assert provider.token_auth == [None]


def test_a_signed_in_visitor_asking_to_sign_in_again_goes_home(
    visitor: Browser, provider: LoopbackProvider
) -> None:
    sso(visitor, provider, "rad")

    again = visitor.get("/portal/oidc/login?next=/portal/worklist")

    assert again.status_code == 303 and again.headers["location"] == "/portal/worklist"


# --- refusals: every one is a clear page, never a 500, and audited ----------------------------
def _assert_refused(response: httpx.Response, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Sign-in with Keycloak failed" in response.text
    for phrase in phrases:
        assert phrase in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_an_error_from_the_provider_is_shown_by_its_code_only(
    visitor: Browser, provider: LoopbackProvider, container: Container
) -> None:
    back = provider.sign_in(start(visitor), "rad", action="deny")
    assert _query(back)["error"] == "access_denied"

    response = visitor.get(back + "&error_description=" + quote("<script>alert(1)</script> call 555-0100"))

    _assert_refused(response, 401, "did not sign you in (access_denied)")
    assert "555-0100" not in response.text and "<script>alert" not in response.text
    assert _login_failures(container) == ["idp_error"]
    assert json.loads(_events(container, "auth.login")[0].detail)["idp_error"] == "access_denied"


def test_an_unknown_provider_error_code_is_not_repeated(visitor: Browser, container: Container) -> None:
    start(visitor)

    response = visitor.get("/portal/oidc/callback?error=made_up_code_42")

    _assert_refused(response, 401, "(other)")
    assert "made_up_code_42" not in response.text


@pytest.mark.parametrize(
    "query",
    ["code=abc", "code=abc&state=", "code=abc&state=not-a-state-we-issued"],
    ids=["no state", "empty state", "unknown state"],
)
def test_a_missing_or_unknown_state_is_refused(
    visitor: Browser, container: Container, provider: LoopbackProvider, query: str
) -> None:
    start(visitor)

    response = visitor.get(f"/portal/oidc/callback?{query}")

    _assert_refused(response, 400, "unknown, has expired or was already used")
    assert _login_failures(container) == ["bad_state"]
    assert provider.token_forms == []  # refused before any code is redeemed


def test_a_replayed_callback_is_refused(
    visitor: Browser, provider: LoopbackProvider, container: Container
) -> None:
    back = provider.sign_in(start(visitor), "rad")
    assert visitor.get(back).status_code == 303
    visitor.http.cookies.clear()

    replay = visitor.get(back)

    _assert_refused(replay, 400, "already used")
    assert len(provider.token_forms) == 1  # the replay never reached the token endpoint
    assert _login_failures(container) == ["bad_state"]


def test_a_callback_with_a_used_state_and_a_fresh_code_is_refused(
    visitor: Browser, provider: LoopbackProvider
) -> None:
    back = provider.sign_in(start(visitor), "rad")
    assert visitor.get(back).status_code == 303
    state = _query(back)["state"]
    visitor.http.cookies.clear()
    other = provider.sign_in(start(visitor), "rad")

    response = visitor.get(f"/portal/oidc/callback?code={_query(other)['code']}&state={state}")

    assert response.status_code == 400


def test_an_expired_state_is_refused(
    visitor: Browser, provider: LoopbackProvider, clock: FakeClock, container: Container
) -> None:
    authorize = start(visitor)
    clock.advance(minutes=11)

    response = visitor.get(provider.sign_in(authorize, "rad"))

    _assert_refused(response, 400, "has expired")
    assert _login_failures(container) == ["bad_state"]


def test_a_state_started_in_another_browser_is_refused_and_spent(
    app: FastAPI, provider: LoopbackProvider, container: Container
) -> None:
    # Login CSRF: an attacker starts a sign-in, signs in as themselves at the provider, and
    # sends the victim's browser to the callback. The victim's browser lacks the cookie.
    attacker, victim = Browser(app), Browser(app)
    try:
        back = provider.sign_in(start(attacker), "rad")
        start(victim)  # the victim has a pre-login cookie of its own

        refused = victim.get(back)
        late = attacker.get(back)
    finally:
        attacker.close()
        victim.close()
    _assert_refused(refused, 400, "please start again")
    assert SESSION_COOKIE not in victim.http.cookies
    assert late.status_code == 400  # the state was spent by the refused attempt
    assert _login_failures(container) == ["bad_state", "browser_mismatch"]
    assert provider.token_forms == []


def test_a_code_injected_into_another_sign_in_fails_the_pkce_check(
    app: FastAPI, provider: LoopbackProvider, container: Container
) -> None:
    # A stolen code, replayed by an attacker in a sign-in of their own (their own state and
    # cookie): the token endpoint sees the attacker's verifier, not the victim's.
    victim, attacker = Browser(app), Browser(app)
    try:
        stolen_code = _query(provider.sign_in(start(victim), "rad"))["code"]
        attacker_state = _query(provider.sign_in(start(attacker), "none"))["state"]

        response = attacker.get(f"/portal/oidc/callback?code={stolen_code}&state={attacker_state}")
    finally:
        victim.close()
        attacker.close()
    _assert_refused(response, 401, "refused the authorization code (invalid_grant)")
    assert provider.token_forms[0]["code"] == stolen_code
    assert _login_failures(container) == ["code_refused"]


def test_a_wrong_nonce_is_refused(visitor: Browser, provider: LoopbackProvider, container: Container) -> None:
    provider.id_token_overrides = {"nonce": "a-nonce-from-another-sign-in"}

    _assert_refused(sso(visitor, provider, "rad"), 401, "ID token was refused (nonce mismatch)")
    assert _login_failures(container) == ["invalid_id_token"]


ID_TOKEN_FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "missing nonce": ({"id_token_overrides": {"nonce": None}}, "missing claim: nonce"),
    "wrong audience": ({"id_token_overrides": {"aud": "another-client", "azp": None}}, "audience mismatch"),
    "the API audience": ({"id_token_overrides": {"aud": AUDIENCE, "azp": None}}, "audience mismatch"),
    "another authorized party": ({"id_token_overrides": {"azp": "another-client"}}, "authorized party"),
    "wrong issuer": ({"id_token_overrides": {"iss": "https://idp.example.test/realms/x"}}, "issuer mismatch"),
    "expired": ({"id_token_overrides": {"exp": 1_700_000_000}}, "token expired"),
    "no iat": ({"id_token_overrides": {"iat": None}}, "missing claim: iat"),
    "forged signature": ({"id_token_signer": "stranger"}, "invalid signature"),
    "alg none": ({"unsigned_id_tokens": True}, "unsigned token"),
}


@pytest.mark.parametrize("fault", list(ID_TOKEN_FAULTS), ids=list(ID_TOKEN_FAULTS))
def test_an_invalid_id_token_is_refused(
    visitor: Browser, provider: LoopbackProvider, container: Container, fault: str
) -> None:
    knobs, reason = ID_TOKEN_FAULTS[fault]
    for name, value in knobs.items():
        if value == "stranger":
            value = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        setattr(provider, name, value)

    response = sso(visitor, provider, "rad")

    _assert_refused(response, 401, "ID token was refused", reason)
    assert _login_failures(container) == ["invalid_id_token"]
    assert visitor.get("/portal/worklist").status_code == 303  # still signed out


def test_a_token_response_without_an_id_token_is_a_provider_fault(
    visitor: Browser, provider: LoopbackProvider
) -> None:
    provider.omit_id_token = True

    _assert_refused(sso(visitor, provider, "rad"), 502, "no id_token")


def test_an_account_without_an_irmsia_role_is_refused_with_403(
    visitor: Browser, provider: LoopbackProvider, container: Container
) -> None:
    response = sso(visitor, provider, "none")

    _assert_refused(response, 403, "no IRMSIA role", "ask an administrator")
    [denied] = [e for e in _events(container, "auth.login") if e.outcome == "denied"]
    assert denied.resource_id == "oidc:kc-none"
    assert json.loads(denied.detail) == {"method": "oidc", "reason": "no_role"}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("fault", ["answers 503", "unreachable"])
def test_a_token_endpoint_that_is_down_gives_a_502_page(
    visitor: Browser, provider: LoopbackProvider, container: Container, fault: str
) -> None:
    if fault == "unreachable":
        provider.token_url = f"http://127.0.0.1:{_closed_port()}/token"
    else:
        provider.token_status = 503

    response = sso(visitor, provider, "rad")

    _assert_refused(response, 502, "token endpoint")
    assert _login_failures(container) == ["idp_unavailable"]


def test_a_wrong_client_secret_is_an_operator_problem_not_a_user_one(
    visitor: Browser, provider: LoopbackProvider
) -> None:
    provider.client_secret = "the-secret-the-provider-really-has"

    _assert_refused(sso(visitor, provider, "rad"), 502, "refused this client (invalid_client)")


def test_an_unreachable_provider_at_sign_in_start_gives_a_502_page(
    tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    issuer = f"http://127.0.0.1:{_closed_port()}/realms/irmsia"
    container = build_container(oidc_settings(tmp_path / "down", db_url, issuer), clock=clock)
    app = create_app(container=container)
    install(app)
    browser = Browser(app)
    try:
        response = browser.get("/portal/oidc/login")
    finally:
        browser.close()
        container.close()
    _assert_refused(response, 502, "unreachable")


def test_a_provider_without_s256_pkce_is_refused_at_sign_in_start(
    visitor: Browser, provider: LoopbackProvider
) -> None:
    provider.pkce_methods = ["plain"]

    _assert_refused(visitor.get("/portal/oidc/login"), 502, "PKCE")


def test_an_answer_naming_another_issuer_is_refused(visitor: Browser, provider: LoopbackProvider) -> None:
    back = provider.sign_in(start(visitor), "rad")

    response = visitor.get(back.replace("iss=", "iss=https%3A%2F%2Fother.example.test%2F"))

    _assert_refused(response, 401, "another issuer")
    assert provider.token_forms == []


def test_oversized_callback_parameters_are_a_400_page(visitor: Browser) -> None:
    response = visitor.get("/portal/oidc/callback?code=" + "x" * 5000 + "&state=s")

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")


def test_no_code_token_verifier_or_user_name_reaches_the_logs(
    visitor: Browser, provider: LoopbackProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    back = provider.sign_in(start(visitor), "rad")
    visitor.get(back)
    provider.token_status = 503
    visitor.http.cookies.clear()
    failed = provider.sign_in(start(visitor), "rad")
    visitor.get(failed)

    secrets_seen = [
        _query(back)["code"],
        _query(back)["state"],
        _query(failed)["code"],
        provider.token_forms[0]["code_verifier"],
        "dr.rad",
        CLIENT_SECRET,
    ]
    # The HTTP client libraries log URLs and headers at DEBUG, and the test's own clients (the
    # browser's side) use them too; what IRMSIA and its server log is what must stay clean.
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name == "irmsia.access" for r in server_side)
    text = "\n".join(record.getMessage() for record in server_side)
    for value in secrets_seen:
        assert value not in text


# --- the session after sign-in ------------------------------------------------------------------
def test_without_a_refresh_token_the_session_ends_with_the_provider_token(
    visitor: Browser, provider: LoopbackProvider, clock: FakeClock
) -> None:
    provider.refresh_tokens = False
    sso(visitor, provider, "rad")
    clock.advance(seconds=290)
    assert visitor.get("/portal/worklist").status_code == 200

    clock.advance(seconds=11)

    assert visitor.get("/portal/worklist").status_code == 303
    assert provider.token_forms[-1]["grant_type"] == "authorization_code"  # no refresh attempted


def test_the_provider_refresh_token_renews_the_session(
    visitor: Browser, provider: LoopbackProvider, clock: FakeClock, container: Container
) -> None:
    sso(visitor, provider, "rad")
    for _ in range(3):  # well past the first access token's expiry
        clock.advance(seconds=250)
        assert visitor.get("/portal/worklist").status_code == 200

    grants = [form["grant_type"] for form in provider.token_forms]
    assert grants == ["authorization_code", "refresh_token", "refresh_token", "refresh_token"]
    assert [e.outcome for e in _events(container, "auth.refresh")] == ["success"] * 3
    assert {e.actor_id for e in _events(container, "auth.refresh")} == {"oidc:kc-rad"}


def test_roles_are_read_again_at_refresh(
    visitor: Browser, provider: LoopbackProvider, clock: FakeClock, container: Container
) -> None:
    sso(visitor, provider, "rad")
    provider.users["rad"].id_claims = {"realm_access": {"roles": ["Audit"]}}
    clock.advance(seconds=250)

    assert visitor.get("/portal/audit").status_code == 200
    assert visitor.get("/portal/worklist").status_code == 403


def test_a_refused_refresh_signs_out(
    visitor: Browser, provider: LoopbackProvider, clock: FakeClock, container: Container
) -> None:
    sso(visitor, provider, "rad")
    provider.refreshes.clear()  # revoked at the provider
    clock.advance(seconds=250)

    assert visitor.get("/portal/worklist").status_code == 303
    [refresh] = _events(container, "auth.refresh")
    assert refresh.outcome == "failure" and json.loads(refresh.detail)["reason"] == "refused"


def test_losing_every_role_at_the_provider_signs_out_at_refresh(
    visitor: Browser, provider: LoopbackProvider, clock: FakeClock, container: Container
) -> None:
    sso(visitor, provider, "rad")
    provider.users["rad"].id_claims = {"realm_access": {"roles": []}}
    clock.advance(seconds=250)

    assert visitor.get("/portal/worklist").status_code == 303
    assert [e.outcome for e in _events(container, "auth.refresh")] == ["denied"]


def test_a_provider_down_at_refresh_keeps_the_session_until_it_expires(
    visitor: Browser, provider: LoopbackProvider, clock: FakeClock
) -> None:
    sso(visitor, provider, "rad")
    provider.token_status = 503
    clock.advance(seconds=250)
    assert visitor.get("/portal/worklist").status_code == 200

    clock.advance(seconds=51)

    assert visitor.get("/portal/worklist").status_code == 303


def test_an_oidc_account_has_no_password_page(visitor: Browser, provider: LoopbackProvider) -> None:
    sso(visitor, provider, "rad")

    page = visitor.get("/portal/password")
    post = visitor.post(
        "/portal/password",
        {
            "current_password": "x",
            "new_password": "a long new password",
            "confirm_password": "a long new password",
        },
    )

    assert page.status_code == 400 and "managed by your identity provider" in page.text
    assert post.status_code == 400
    assert 'href="/portal/password"' not in visitor.get("/portal/worklist").text


# --- sign-out --------------------------------------------------------------------------------------
def test_logout_ends_the_session_and_moves_on_to_the_provider(
    visitor: Browser, provider: LoopbackProvider, container: Container
) -> None:
    sso(visitor, provider, "rad")
    token = csrf_of(visitor.get("/portal/worklist").text)

    response = visitor.http.post("/portal/logout", data={"csrf_token": token})

    assert response.status_code == 200
    assert "signed out of IRMSIA" in response.text
    end_session = _query_from_meta(response.text)
    assert end_session.startswith(provider.base + "/realms/irmsia/protocol/openid-connect/logout?")
    assert _query(end_session) == {
        "client_id": CLIENT_ID,
        "post_logout_redirect_uri": f"{ORIGIN}/portal/login",
    }  # no id_token_hint: no token in a URL
    assert visitor.get("/portal/worklist").status_code == 303
    [logout] = _events(container, "auth.logout")
    assert (logout.actor_id, logout.outcome, json.loads(logout.detail)) == (
        "oidc:kc-rad",
        "success",
        {"method": "oidc"},
    )
    # The provider's end-session endpoint sends the browser back to the sign-in page.
    with httpx.Client() as http:
        back = http.get(end_session)
    assert back.status_code == 302 and back.headers["location"] == f"{ORIGIN}/portal/login"


def _query_from_meta(page: str) -> str:
    marker = 'http-equiv="refresh" content="0; url='
    start_at = page.index(marker) + len(marker)
    return page[start_at : page.index('"', start_at)].replace("&amp;", "&")


def test_logout_without_an_end_session_endpoint_returns_to_the_sign_in_page(
    visitor: Browser, provider: LoopbackProvider
) -> None:
    provider.end_session = False
    sso(visitor, provider, "aud")

    response = visitor.post("/portal/logout")

    assert response.status_code == 303
    assert response.headers["location"] == "/portal/login?signed_out=1"
    assert visitor.get("/portal/audit").status_code == 303


def test_local_accounts_still_sign_in_with_a_password(browser: BrowserFactory) -> None:
    local = browser("admin")

    assert local.get("/portal/admin/users").status_code == 200


# --- the portal's role matrix for OIDC principals ---------------------------------------------
PAGE_ENTRIES = [
    entry
    for entry in MATRIX
    if entry.method == "GET"
    and not entry.route.startswith("/portal/oidc/")
    and entry.route not in ("/portal/password", "/portal/{rest:path}")
]
OIDC_ROLES = {"rad": "radiologist", "aud": "auditor"}


@pytest.mark.parametrize("user", list(OIDC_ROLES))
def test_oidc_principals_get_exactly_what_their_role_allows_on_every_page(
    visitor: Browser, provider: LoopbackProvider, world: World, container: Container, user: str
) -> None:
    for entry in PAGE_ENTRIES:
        prepare = getattr(entry, "prepare", None)
        if prepare is not None:
            prepare(container, world)
    with container.sessions() as session:
        job_id = session.scalars(select(Job.id).limit(1)).one()
    ids = {
        "user_id": container.accounts.create(CLI_CTX, "target1", "clinician", "a long passphrase!").user.id
    }
    ids["job_id"] = job_id
    assert sso(visitor, provider, user).status_code == 303
    role = OIDC_ROLES[user]
    for entry in PAGE_ENTRIES:
        status = visitor.get(entry.url(world, ids)).status_code
        expected = entry.ok if role in entry.allowed else (403,)
        assert status in expected, f"{role}: GET {entry.route} gave {status}"


def test_the_oidc_routes_have_rows_in_the_role_matrix() -> None:
    routes = {(entry.method, entry.route) for entry in MATRIX}

    assert {("GET", "/portal/oidc/login"), ("GET", "/portal/oidc/callback")} <= routes
