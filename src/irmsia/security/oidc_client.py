"""The relying-party side of the OpenID Connect authorization-code flow with PKCE.

Pure helpers build what goes into URLs (``new_pkce``, ``authorization_url``,
``end_session_url``); ``TokenEndpoint`` talks to the provider's token endpoint through an
injected ``httpx.Client`` (RFC 6749 §4.1.3 and §6, PKCE per RFC 7636 with S256 only).
Checking the ID token it returns is ``OIDCVerifier.verify_id_token``'s job; orchestrating
the whole login (state, nonce, sessions, audit) is ``irmsia.usecases.oidc_login``'s.

Errors: a provider that refuses the code or refresh token raises ``AuthenticationFailed``;
one that cannot be reached, times out or answers nonsense raises ``ExternalServiceError``
(``ServiceTimeout``). Messages carry the OAuth error code at most (from a fixed list),
never a token, a code or the provider's free-text description.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from irmsia.errors import AuthenticationFailed, ConfigError, ExternalServiceError, ServiceTimeout

# RFC 6749 §4.1.2.1 and §5.2, plus OpenID Connect Core §3.1.2.6: the only error codes we
# repeat (in audit details and on the page); anything else becomes "other".
KNOWN_ERRORS = frozenset(
    {
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "invalid_request_uri",
        "invalid_request_object",
        "request_not_supported",
        "request_uri_not_supported",
        "registration_not_supported",
        "invalid_client",
        "invalid_grant",
        "unsupported_grant_type",
    }
)
MAX_TOKEN_RESPONSE_BYTES = 256 * 1024


def error_code(value: str | None) -> str:
    """An OAuth error parameter reduced to a known code (or ``other``), safe to log and show."""
    return value if value in KNOWN_ERRORS else "other"


def random_token() -> str:
    """A URL-safe random value with 256 bits of entropy (state, nonce, binding cookie)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class PKCE:
    """A PKCE pair (RFC 7636): the verifier stays on the server, the challenge goes to the IdP."""

    verifier: str = field(repr=False)
    challenge: str
    method: str = "S256"


def s256(verifier: str) -> str:
    """The S256 code challenge of a verifier: BASE64URL(SHA256(ASCII(verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce() -> PKCE:
    # 64 random bytes → 86 characters of [A-Za-z0-9_-], inside RFC 7636's 43..128.
    verifier = secrets.token_urlsafe(64)
    return PKCE(verifier=verifier, challenge=s256(verifier))


def _with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to whatever query it already has (Entra ID adds none, some IdPs do)."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def authorization_url(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: str,
    state: str,
    nonce: str,
    pkce: PKCE,
) -> str:
    """The authorization request (OpenID Connect Core §3.1.2.1) as the URL to send the browser to.

    It carries only the client id, our redirect URI, the scopes and random values; the
    page to return to after sign-in stays on the server with the state.
    """
    return _with_query(
        endpoint,
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce.challenge,
            "code_challenge_method": pkce.method,
        },
    )


def end_session_url(endpoint: str, *, client_id: str, post_logout_redirect_uri: str) -> str:
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2).

    No ``id_token_hint``: the ID token would travel in a URL. Keycloak then asks the user to
    confirm; Entra ID signs out directly.
    """
    return _with_query(
        endpoint, {"client_id": client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
    )


@dataclass(frozen=True)
class TokenResponse:
    """A successful token endpoint answer (RFC 6749 §5.1); tokens are hidden from ``repr``."""

    id_token: str | None = field(repr=False)
    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: int | None


class TokenEndpoint:
    """Exchanges codes and refresh tokens at a provider's token endpoint for one client.

    ``client_secret`` given: a confidential client authenticating with HTTP Basic
    (``client_secret_basic``, RFC 6749 §2.3.1). ``client_secret`` None: a public client that
    sends only its ``client_id``; PKCE is what protects its codes.
    """

    def __init__(
        self, http: httpx.Client, *, client_id: str, client_secret: str | None, redirect_uri: str
    ) -> None:
        if not client_id or not redirect_uri:
            raise ConfigError("OIDC client id and redirect URI must both be set")
        self._http = http
        self._client_id = client_id
        self._secret = client_secret or None
        self._redirect_uri = redirect_uri

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def redirect_uri(self) -> str:
        return self._redirect_uri

    def exchange_code(self, url: str, *, code: str, verifier: str) -> TokenResponse:
        """Redeem an authorization code with its PKCE verifier; the answer must hold an ID token."""
        response = self._post(
            url,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self._redirect_uri,
                "code_verifier": verifier,
            },
            "authorization code",
        )
        if response.id_token is None:
            raise ExternalServiceError("identity provider's token response has no id_token")
        return response

    def refresh(self, url: str, *, refresh_token: str) -> TokenResponse:
        """Use a refresh token (RFC 6749 §6); the answer may or may not hold a new ID token."""
        return self._post(
            url, {"grant_type": "refresh_token", "refresh_token": refresh_token}, "refresh token"
        )

    def _post(self, url: str, form: dict[str, str], what: str) -> TokenResponse:
        headers = {"Accept": "application/json"}
        if self._secret is not None:
            # RFC 6749 §2.3.1: both parts form-urlencoded before Basic; httpx does not do that.
            credentials = f"{_form_encode(self._client_id)}:{_form_encode(self._secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        else:
            form = {**form, "client_id": self._client_id}
        try:
            response = self._http.post(url, data=form, headers=headers)
        except httpx.TimeoutException as exc:
            raise ServiceTimeout("identity provider's token endpoint timed out") from exc
        except httpx.HTTPError as exc:
            raise ExternalServiceError("identity provider's token endpoint is unreachable") from exc
        if len(response.content) > MAX_TOKEN_RESPONSE_BYTES:
            raise ExternalServiceError("identity provider's token response is too large")
        body = _json_object(response)
        if response.status_code in (httpx.codes.BAD_REQUEST, httpx.codes.UNAUTHORIZED):
            given = body.get("error") if body is not None else None
            code = error_code(given if isinstance(given, str) else None)
            if code in ("invalid_client", "unauthorized_client"):
                # Our credentials are wrong: an operator problem, not the user's.
                raise ExternalServiceError(f"identity provider refused this client ({code})")
            raise AuthenticationFailed(f"identity provider refused the {what} ({code})")
        if response.status_code != httpx.codes.OK:
            raise ExternalServiceError(f"identity provider's token endpoint answered {response.status_code}")
        if body is None:
            raise ExternalServiceError("identity provider's token response is not a JSON object")
        token_type = body.get("token_type")
        if body.get("access_token") is not None and (
            not isinstance(token_type, str) or token_type.lower() != "bearer"
        ):
            raise ExternalServiceError("identity provider's token response is not a bearer token")
        expires_in = body.get("expires_in")
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)  # some providers (older Entra ID v1) send a string
        return TokenResponse(
            id_token=_string(body, "id_token"),
            access_token=_string(body, "access_token"),
            refresh_token=_string(body, "refresh_token"),
            expires_in=expires_in
            if isinstance(expires_in, int) and not isinstance(expires_in, bool)
            else None,
        )


def _form_encode(value: str) -> str:
    return urlencode({"": value})[1:]


def _json_object(response: httpx.Response) -> dict[str, object] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _string(body: dict[str, object], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None
