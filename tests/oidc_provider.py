"""A loopback OpenID provider for tests of the portal's sign-in (authorization code + PKCE).

It runs a real HTTP server on 127.0.0.1 in a thread and serves what Keycloak serves under a
realm: the discovery document, a JWKS with a key generated here, an authorize page (a tiny
HTML form naming the test users, which redirects back with a code), a token endpoint that
checks the client's credentials, the redirect URI and the PKCE verifier (S256) and answers
with a signed ID token and access token (and refresh tokens), and an end-session endpoint.
Token times come from the clock the test hands in, so nothing depends on the machine's speed.

Knobs on ``LoopbackProvider`` break one thing at a time (a token endpoint that fails, an ID
token with a wrong nonce or signed by a stranger, …); every request is recorded.
"""

from __future__ import annotations

import base64
import html
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from irmsia.security.oidc_client import s256
from tests.unit.security.test_oidc import REALM_PATH, public_jwk, sign, unsigned_token

DISCOVERY = REALM_PATH + "/.well-known/openid-configuration"
JWKS = REALM_PATH + "/protocol/openid-connect/certs"
AUTHORIZE = REALM_PATH + "/protocol/openid-connect/auth"
TOKEN = REALM_PATH + "/protocol/openid-connect/token"
LOGOUT = REALM_PATH + "/protocol/openid-connect/logout"
KID = "loopback-1"


@dataclass
class User:
    """A person at the provider: the ID token's and the access token's extra claims."""

    sub: str
    username: str
    id_claims: dict[str, Any] = field(default_factory=dict)
    access_claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class Grant:
    """What the provider remembers about an authorization code or a refresh token."""

    user: str
    nonce: str | None
    client_id: str
    redirect_uri: str = ""
    code_challenge: str = ""
    code_challenge_method: str = ""
    used: bool = False


@dataclass
class LoopbackProvider:
    """The provider's configuration, its knobs, and what it was asked."""

    clock: Callable[[], datetime]
    client_id: str
    redirect_uri: str
    audience: str  # ``aud`` of access tokens (the API's OIDC_AUDIENCE)
    client_secret: str | None = None  # None: a public client
    users: dict[str, User] = field(default_factory=dict)
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    issuer: str = ""
    # --- knobs ---
    token_status: int | None = None  # answer every token request with this status
    id_token_overrides: dict[str, Any] = field(default_factory=dict)  # None values remove a claim
    id_token_signer: rsa.RSAPrivateKey | None = None  # sign ID tokens with another key (forgery)
    unsigned_id_tokens: bool = False  # alg=none
    omit_id_token: bool = False
    expires_in: int = 300
    refresh_tokens: bool = True
    end_session: bool = True
    pkce_methods: list[str] | None = field(default_factory=lambda: ["plain", "S256"])
    token_url: str | None = None  # announce another token endpoint (e.g. a port nobody listens on)
    # --- records ---
    hits: Counter[str] = field(default_factory=Counter)
    authorize_queries: list[dict[str, str]] = field(default_factory=list)
    token_forms: list[dict[str, str]] = field(default_factory=list)
    token_auth: list[str | None] = field(default_factory=list)  # the Authorization header of each
    logout_queries: list[dict[str, str]] = field(default_factory=list)
    codes: dict[str, Grant] = field(default_factory=dict)
    refreshes: dict[str, Grant] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return self.issuer.removesuffix(REALM_PATH)

    @property
    def authorize_url(self) -> str:
        return self.base + AUTHORIZE

    def discovery(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "issuer": self.issuer,
            "jwks_uri": self.base + JWKS,
            "authorization_endpoint": self.base + AUTHORIZE,
            "token_endpoint": self.token_url or self.base + TOKEN,
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }
        if self.end_session:
            document["end_session_endpoint"] = self.base + LOGOUT
        if self.pkce_methods is not None:
            document["code_challenge_methods_supported"] = self.pkce_methods
        return document

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.key, KID, use="sig", alg="RS256")]}

    # --- tokens ---------------------------------------------------------------------
    def tokens_for(self, grant: Grant) -> dict[str, Any]:
        user = self.users[grant.user]
        now = int(self.clock().timestamp())
        base = {"iss": self.issuer, "sub": user.sub, "iat": now, "exp": now + self.expires_in}
        id_claims = {
            **base,
            "aud": self.client_id,
            "azp": self.client_id,
            "preferred_username": user.username,
            **({"nonce": grant.nonce} if grant.nonce is not None else {}),
            **user.id_claims,
            **self.id_token_overrides,
        }
        id_claims = {name: value for name, value in id_claims.items() if value is not None}
        access_claims = {**base, "aud": self.audience, "azp": self.client_id, **user.access_claims}
        body: dict[str, Any] = {
            "access_token": sign(self.key, access_claims, kid=KID),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if not self.omit_id_token:
            if self.unsigned_id_tokens:
                body["id_token"] = unsigned_token(id_claims, kid=KID)
            else:
                body["id_token"] = sign(self.id_token_signer or self.key, id_claims, kid=KID)
        if self.refresh_tokens:
            token = secrets.token_urlsafe(24)
            self.refreshes[token] = Grant(user=grant.user, nonce=grant.nonce, client_id=grant.client_id)
            body["refresh_token"] = token
        return body

    def token_answer(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        """The token endpoint's status and JSON body for one request (RFC 6749 §4.1.3, §6)."""
        if self.token_status is not None:
            return self.token_status, {"error": "server_error"}
        if not self._client_ok(form, authorization):
            return 401, {"error": "invalid_client"}
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            grant = self.codes.get(form.get("code", ""))
            if grant is None or grant.used:
                return 400, {"error": "invalid_grant", "error_description": "code unknown or used"}
            grant.used = True  # single use, whatever follows
            if form.get("redirect_uri") != grant.redirect_uri:
                return 400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
            verifier = form.get("code_verifier", "")
            if grant.code_challenge_method != "S256" or s256(verifier) != grant.code_challenge:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
            return 200, self.tokens_for(grant)
        if grant_type == "refresh_token":
            grant = self.refreshes.pop(form.get("refresh_token", ""), None)
            if grant is None:
                return 400, {"error": "invalid_grant", "error_description": "refresh token unknown"}
            return 200, self.tokens_for(grant)
        return 400, {"error": "unsupported_grant_type"}

    def _client_ok(self, form: dict[str, str], authorization: str | None) -> bool:
        if self.client_secret is None:
            return form.get("client_id") == self.client_id and authorization is None
        if not authorization or not authorization.startswith("Basic "):
            return False
        decoded = base64.b64decode(authorization.removeprefix("Basic ")).decode()
        user, _, password = decoded.partition(":")
        given = dict(parse_qsl(f"u={user}&p={password}"))
        return given.get("u") == self.client_id and given.get("p") == self.client_secret

    # --- the authorize step -----------------------------------------------------------
    def authorize(self, query: dict[str, str], choice: dict[str, str]) -> tuple[int, str]:
        """The answer to the sign-in form: (status, redirect location or error text)."""
        if query.get("client_id") != self.client_id or query.get("redirect_uri") != self.redirect_uri:
            return 400, "unknown client or redirect_uri"  # never redirect to an unregistered URI
        state = query.get("state", "")
        if choice.get("action") == "deny":
            return 302, _join(self.redirect_uri, {"error": "access_denied", "state": state})
        if query.get("response_type") != "code" or choice.get("user") not in self.users:
            return 302, _join(self.redirect_uri, {"error": "invalid_request", "state": state})
        code = secrets.token_urlsafe(24)
        self.codes[code] = Grant(
            user=choice["user"],
            nonce=query.get("nonce"),
            client_id=self.client_id,
            redirect_uri=query["redirect_uri"],
            code_challenge=query.get("code_challenge", ""),
            code_challenge_method=query.get("code_challenge_method", "plain"),
        )
        return 302, _join(self.redirect_uri, {"code": code, "state": state, "iss": self.issuer})

    def sign_in(self, authorize_url: str, user: str, action: str = "sign-in") -> str:
        """What a browser does on the authorize page, over HTTP: the URL the provider sends it back to."""
        assert authorize_url.startswith(self.authorize_url + "?"), "not this provider's authorize page"
        with httpx.Client(timeout=5.0) as http:
            page = http.get(authorize_url)
            assert page.status_code == 200 and "<form" in page.text
            answer = http.post(authorize_url, data={"user": user, "action": action})
        assert answer.status_code == 302, answer.text
        return answer.headers["location"]

    def form_page(self, query: dict[str, str]) -> str:
        options = "".join(
            f'<option value="{html.escape(key)}">{html.escape(user.username)}</option>'
            for key, user in self.users.items()
        )
        return (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Loopback IdP</title></head>"
            "<body><h1>Loopback IdP</h1><form method=post>"
            f"<label for=user>Account</label><select id=user name=user>{options}</select>"
            "<button type=submit name=action value=sign-in>Log in</button>"
            "<button type=submit name=action value=deny>Cancel</button>"
            "</form></body></html>"
        )


def _join(url: str, params: dict[str, str]) -> str:
    return f"{url}?{urlencode(params)}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    provider: LoopbackProvider

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up are expected; stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        provider = self.server.provider
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        with provider.lock:
            provider.hits[parts.path] += 1
        if parts.path == DISCOVERY:
            self._json(200, provider.discovery())
        elif parts.path == JWKS:
            self._json(200, provider.jwks())
        elif parts.path == AUTHORIZE:
            with provider.lock:
                provider.authorize_queries.append(query)
            self._send(200, provider.form_page(query).encode(), "text/html; charset=utf-8")
        elif parts.path == LOGOUT and provider.end_session:
            with provider.lock:
                provider.logout_queries.append(query)
            target = query.get("post_logout_redirect_uri", "")
            if query.get("client_id") != provider.client_id or not target:
                self._send(400, b"unknown client", "text/plain")
                return
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        provider = self.server.provider
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        with provider.lock:
            provider.hits[parts.path] += 1
            if parts.path == TOKEN:
                provider.token_forms.append(form)
                provider.token_auth.append(self.headers.get("Authorization"))
                status, body = provider.token_answer(form, self.headers.get("Authorization"))
            elif parts.path == AUTHORIZE:
                status, location = provider.authorize(dict(parse_qsl(parts.query)), form)
            else:
                status, body = 404, {"error": "not_found"}
        if parts.path == AUTHORIZE:
            if status == 302:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(status, location.encode(), "text/plain")
            return
        self._json(status, body)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""


@contextmanager
def running(provider: LoopbackProvider) -> Iterator[LoopbackProvider]:
    """Serve ``provider`` on a free loopback port (its ``issuer`` is set) until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.provider = provider
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}{REALM_PATH}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
