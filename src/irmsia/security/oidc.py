"""Verify bearer tokens issued by an external OpenID Connect provider (Entra ID, Keycloak).

``OIDCVerifier.verify(token)`` checks the signature against the provider's published
keys (JWKS), the algorithm, issuer, audience and validity times, and returns an
``OIDCIdentity`` whose roles are already translated to IRMSIA's roles. The provider is
reached only through the injected ``httpx.Client`` and only when keys are needed: the
discovery document once, the JWKS when the cache is older than its TTL or when a token
names a key id the cache does not hold (at most once per ``jwks_min_refresh_interval_s``).

``verify_id_token(token, client_id=..., nonce=...)`` applies the same checks to an ID token
from the portal's authorization-code login (audience = the client id, plus ``nonce``, ``iat``
and ``azp``), and ``metadata()`` returns the provider's endpoints from the same cached
discovery document (see ``irmsia.security.oidc_client`` for the rest of that flow).

Every rejected token raises ``AuthenticationFailed`` with a short reason that never
repeats the token or any value taken from it; an unreachable or misbehaving provider
raises ``ExternalServiceError`` (``ServiceTimeout`` on timeouts).
"""

from __future__ import annotations

import hmac
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import httpx
import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from irmsia.clock import Clock
from irmsia.errors import AuthenticationFailed, ConfigError, ExternalServiceError, ServiceTimeout
from irmsia.security.policy import Role

PLATFORM_ROLES = frozenset(role.value for role in Role)

DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")

# Which algorithms each kind of public key may verify. A token's ``alg`` must appear here
# for the key its ``kid`` names: this, not the token header, decides how a key is used,
# so an RSA public key can never be treated as an HMAC secret (the RS/HS confusion).
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_ALGORITHMS_FOR_KEY: dict[tuple[str, str | None], frozenset[str]] = {
    ("RSA", None): _RSA_ALGORITHMS,
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("EC", "P-521"): frozenset({"ES512"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}
_SUPPORTED_ALGORITHMS = frozenset().union(*_ALGORITHMS_FOR_KEY.values())
_KEY_PARSERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
}

# Real access tokens are a few KiB; refusing anything far larger bounds the work an
# anonymous caller can make us do before the signature is checked.
MAX_TOKEN_CHARS = 16 * 1024
# Claims whose JSON form is larger than this (e.g. Entra ID group lists) are left out of
# ``OIDCIdentity.claims``; they are never needed downstream and bloat every request.
MAX_KEPT_CLAIM_CHARS = 1024
_USERNAME_CLAIMS = ("preferred_username", "upn", "unique_name", "email")
_ROLE_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class OIDCIdentity:
    """Who a verified token speaks for.

    ``roles`` holds IRMSIA role names only (may be empty). ``claims`` is a read-only copy
    of the token's claims without oversized ones; it may hold personal data (name, email),
    so it is left out of ``repr`` and must not be logged.
    """

    subject: str
    username: str
    roles: frozenset[str]
    issuer: str
    expires_at: datetime
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class _PublicKey:
    kty: str
    crv: str | None
    alg: str | None  # the ``alg`` the JWK itself declares, if any
    key: Any  # a cryptography public key object

    def accepts(self, alg: str) -> bool:
        allowed = _ALGORITHMS_FOR_KEY.get((self.kty, self.crv), frozenset())
        return alg in allowed and (self.alg is None or self.alg == alg)


@dataclass(frozen=True)
class _KeySet:
    keys: Mapping[str, _PublicKey]
    fetched_at: datetime


@dataclass(frozen=True)
class ProviderMetadata:
    """The endpoints a provider's discovery document announces (OpenID Connect Discovery 1.0 §3).

    An endpoint is None when the document does not name it or names something that is not
    an http(s) URL. ``code_challenge_methods`` is None when the document does not say (Entra
    ID does not); otherwise the PKCE methods the provider supports.
    """

    issuer: str
    jwks_uri: str | None
    authorization_endpoint: str | None
    token_endpoint: str | None
    end_session_endpoint: str | None
    code_challenge_methods: frozenset[str] | None
    fetched_at: datetime


class OIDCVerifier:
    """Verifies one provider's bearer tokens for one audience; safe to share between threads.

    ``role_claim`` names the claim holding roles, as a dotted path for nested claims
    (Keycloak ``realm_access.roles``, ``resource_access.<client>.roles``); its value may be
    a list or a space/comma separated string. ``role_map`` translates provider role names
    to IRMSIA roles; when it is given and not empty, only mapped names count, so a provider
    role that happens to be called ``admin`` grants nothing unless mapped. Without a map,
    provider role names are taken as IRMSIA role names. Names that are not IRMSIA roles
    are dropped. Nothing is fetched until the first ``verify`` (or ``prefetch``).

    Raises ``ConfigError`` for unusable arguments: an empty issuer or audience, symmetric
    or unknown algorithms, a ``role_map`` value that is not an IRMSIA role.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        http: httpx.Client,
        clock: Clock,
        role_claim: str = "roles",
        role_map: Mapping[str, str] | None = None,
        jwks_url: str | None = None,
        leeway_s: int = 30,
        jwks_cache_ttl_s: int = 3600,
        jwks_min_refresh_interval_s: int = 30,
        discovery_ttl_s: int = 86400,
        allowed_algs: Iterable[str] = DEFAULT_ALGORITHMS,
    ) -> None:
        if not issuer or not audience:
            raise ConfigError("OIDC issuer and audience must both be set")
        if not role_claim:
            raise ConfigError("OIDC role claim must not be empty")
        if leeway_s < 0 or jwks_cache_ttl_s <= 0 or jwks_min_refresh_interval_s < 0 or discovery_ttl_s <= 0:
            raise ConfigError("OIDC leeway and refresh interval must be >= 0 and the cache TTLs > 0")
        algorithms = frozenset(allowed_algs)
        unusable = sorted(algorithms - _SUPPORTED_ALGORITHMS)
        if unusable or not algorithms:
            # HS* and "none" land here too: a public-key verifier has no business with them.
            raise ConfigError(f"OIDC allowed algorithms must be asymmetric JWS algorithms; got {unusable}")
        bad_targets = sorted({target for target in (role_map or {}).values() if target not in PLATFORM_ROLES})
        if bad_targets:
            raise ConfigError(f"OIDC role map targets must be IRMSIA roles; got {bad_targets}")

        self._issuer = issuer
        self._audience = audience
        self._http = http
        self._clock = clock
        self._role_path = role_claim.split(".")
        self._role_map = dict(role_map) if role_map else None
        self._jwks_url = jwks_url
        self._leeway = leeway_s
        self._ttl = timedelta(seconds=jwks_cache_ttl_s)
        self._min_refresh = timedelta(seconds=jwks_min_refresh_interval_s)
        self._algorithms = algorithms
        self._discovery_ttl = timedelta(seconds=discovery_ttl_s)
        self._metadata: ProviderMetadata | None = None
        self._keys: _KeySet | None = None
        self._last_fetch: datetime | None = None
        # Serialises discovery and JWKS fetches so concurrent requests share one fetch.
        self._lock = threading.Lock()

    # --- public -------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        return self._issuer

    def verify(self, token: str) -> OIDCIdentity:
        """Check a bearer token and return whom it identifies.

        Raises ``AuthenticationFailed`` (with a short reason) for any invalid token,
        ``ExternalServiceError`` if the provider's keys are needed and cannot be fetched,
        ``ConfigError`` if discovery shows the configured issuer is wrong.
        """
        claims = self._verified_claims(token, self._audience, ("exp", "iss", "aud", "sub"))
        expires_at = self._check_times(claims, self._now())
        return self._identity(claims, expires_at)

    def verify_id_token(
        self, token: str, *, client_id: str, nonce: str, nonce_required: bool = True
    ) -> OIDCIdentity:
        """Check an ID token from the authorization-code flow (OpenID Connect Core §3.1.3.7).

        Signature, algorithm and key rules, issuer and times as in ``verify``; the audience
        must contain ``client_id`` (with several audiences, ``azp`` must be present), an
        ``azp`` must equal ``client_id``, ``iat`` must be present, and ``nonce`` must equal
        the one sent with the authorization request. ``nonce_required=False`` (tokens from
        a refresh) accepts an ID token without ``nonce``, never one with another value.
        Raises like ``verify``.
        """
        claims = self._verified_claims(token, client_id, ("exp", "iss", "aud", "sub", "iat"))
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        if azp is not None and azp != client_id:
            raise AuthenticationFailed("authorized party mismatch")
        if len(audiences) > 1 and azp is None:
            raise AuthenticationFailed("missing claim: azp")
        given = claims.get("nonce")
        if given is None:
            if nonce_required:
                raise AuthenticationFailed("missing claim: nonce")
        elif not isinstance(given, str) or not hmac.compare_digest(given.encode(), nonce.encode()):
            raise AuthenticationFailed("nonce mismatch")
        expires_at = self._check_times(claims, self._now())
        return self._identity(claims, expires_at)

    def metadata(self) -> ProviderMetadata:
        """The provider's discovery document (cached; fetched again after a day).

        Raises ``ExternalServiceError`` (``ServiceTimeout``) when it cannot be fetched and
        ``ConfigError`` when it names another issuer.
        """
        current = self._metadata
        if current is not None and self._now() - current.fetched_at < self._discovery_ttl:
            return current
        with self._lock:
            return self._metadata_locked()

    def _verified_claims(self, token: str, audience: str, required: tuple[str, ...]) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationFailed("token too large")
        header = _unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise AuthenticationFailed("unsigned token")
        if alg not in self._algorithms:
            raise AuthenticationFailed("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationFailed("token names no signing key")
        key = self._key_for(kid)
        if not key.accepts(alg):
            raise AuthenticationFailed("algorithm does not match the signing key")
        return self._decode(token, key, alg, audience, required)

    def prefetch(self) -> None:
        """Run discovery and fetch the JWKS now (e.g. at start-up) instead of on first use.

        Raises ``ExternalServiceError`` or ``ConfigError`` like ``verify``.
        """
        with self._lock:
            self._fetch_keys_locked()

    # --- token checks ---------------------------------------------------------------
    def _decode(
        self, token: str, key: _PublicKey, alg: str, audience: str, required: tuple[str, ...]
    ) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=audience,
                issuer=self._issuer,
                options={
                    # Times are checked in _check_times against the injected clock:
                    # PyJWT would read the system clock itself.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": list(required),
                    # Refuse short RSA keys outright instead of warning.
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as exc:
            # ``from None``: PyJWT's messages can echo attacker-chosen header values, and
            # a chained cause would carry them into tracebacks and logs.
            raise AuthenticationFailed(_reason_for(exc)) from None

    def _check_times(self, claims: Mapping[str, Any], now: datetime) -> datetime:
        """Check exp (required), nbf and iat with leeway; return the expiry time."""
        now_s = now.timestamp()
        exp = _numeric_date(claims, "exp")
        if exp is None:
            raise AuthenticationFailed("missing claim: exp")
        if exp <= now_s - self._leeway:
            raise AuthenticationFailed("token expired")
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and nbf > now_s + self._leeway:
            raise AuthenticationFailed("token not yet valid")
        iat = _numeric_date(claims, "iat")
        if iat is not None and iat > now_s + self._leeway:
            raise AuthenticationFailed("token issued in the future")
        return datetime.fromtimestamp(exp, UTC)

    def _identity(self, claims: Mapping[str, Any], expires_at: datetime) -> OIDCIdentity:
        subject = claims["sub"]  # PyJWT has checked it is present and a string
        if not subject:
            raise AuthenticationFailed("missing claim: sub")
        username = next(
            (claims[name] for name in _USERNAME_CLAIMS if isinstance(claims.get(name), str) and claims[name]),
            subject,
        )
        return OIDCIdentity(
            subject=subject,
            username=username,
            roles=self._roles(claims),
            issuer=self._issuer,
            expires_at=expires_at,
            claims=MappingProxyType(_small_claims(claims)),
        )

    def _roles(self, claims: Mapping[str, Any]) -> frozenset[str]:
        raw = _claim_at(claims, self._role_path)
        if isinstance(raw, str):
            names = [name for name in _ROLE_SEPARATORS.split(raw) if name]
        elif isinstance(raw, list):
            names = [name for name in raw if isinstance(name, str)]
        else:
            names = []
        if self._role_map is not None:
            mapped = {self._role_map[name] for name in names if name in self._role_map}
        else:
            mapped = set(names)
        return frozenset(mapped & PLATFORM_ROLES)

    # --- keys -----------------------------------------------------------------------
    def _key_for(self, kid: str) -> _PublicKey:
        keyset = self._current_keys()
        key = keyset.keys.get(kid)
        if key is None:
            key = self._refreshed_for_unknown_kid(keyset).keys.get(kid)
        if key is None:
            raise AuthenticationFailed("unknown signing key")
        return key

    def _current_keys(self) -> _KeySet:
        keyset = self._keys
        if keyset is not None and self._now() - keyset.fetched_at < self._ttl:
            return keyset
        with self._lock:
            keyset = self._keys
            if keyset is not None and self._now() - keyset.fetched_at < self._ttl:
                return keyset
            return self._fetch_keys_locked()

    def _refreshed_for_unknown_kid(self, seen: _KeySet) -> _KeySet:
        """Refetch the JWKS for a key id we do not hold, unless one was fetched recently.

        The rate limit stops a flood of tokens with made-up key ids from turning into a
        flood of requests to the provider.
        """
        with self._lock:
            current = self._keys
            if current is not None and current is not seen:
                return current  # another request refreshed while we waited
            last = self._last_fetch
            if last is not None and self._now() - last < self._min_refresh:
                return seen
            return self._fetch_keys_locked()

    def _fetch_keys_locked(self) -> _KeySet:
        now = self._now()
        # Counted as an attempt even if it fails, so an unreachable provider is not
        # retried on every request that names an unknown key.
        self._last_fetch = now
        document = self._get_json(self._jwks_uri_locked(), "JWKS")
        keyset = _KeySet(keys=_parse_jwks(document), fetched_at=now)
        self._keys = keyset
        return keyset

    def _jwks_uri_locked(self) -> str:
        if self._jwks_url is not None:
            return self._jwks_url
        jwks_uri = self._metadata_locked().jwks_uri
        if jwks_uri is None:
            raise ExternalServiceError("identity provider's discovery document has no usable jwks_uri")
        self._jwks_url = jwks_uri
        return jwks_uri

    def _metadata_locked(self) -> ProviderMetadata:
        now = self._now()
        current = self._metadata
        if current is not None and now - current.fetched_at < self._discovery_ttl:
            return current
        url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._get_json(url, "discovery document")
        if document.get("issuer") != self._issuer:
            raise ConfigError("OIDC issuer does not match the provider's discovery document")
        methods = document.get("code_challenge_methods_supported")
        metadata = ProviderMetadata(
            issuer=self._issuer,
            jwks_uri=_endpoint(document, "jwks_uri"),
            authorization_endpoint=_endpoint(document, "authorization_endpoint"),
            token_endpoint=_endpoint(document, "token_endpoint"),
            end_session_endpoint=_endpoint(document, "end_session_endpoint"),
            code_challenge_methods=(
                frozenset(m for m in methods if isinstance(m, str)) if isinstance(methods, list) else None
            ),
            fetched_at=now,
        )
        self._metadata = metadata
        return metadata

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._http.get(url, headers={"Accept": "application/json"})
        except httpx.TimeoutException as exc:
            raise ServiceTimeout(f"identity provider timed out serving its {what}") from exc
        except httpx.HTTPError as exc:
            raise ExternalServiceError(f"identity provider unreachable for its {what}") from exc
        if response.status_code != httpx.codes.OK:
            raise ExternalServiceError(f"identity provider answered {response.status_code} for its {what}")
        try:
            document = response.json()
        except ValueError:
            raise ExternalServiceError(f"identity provider's {what} is not JSON") from None
        if not isinstance(document, dict):
            raise ExternalServiceError(f"identity provider's {what} is not a JSON object")
        return document

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ConfigError("the clock given to OIDCVerifier must return timezone-aware times")
        return now


# --- pure helpers -------------------------------------------------------------------
def _endpoint(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return value
    return None


def _unverified_header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthenticationFailed("malformed token") from None


def _reason_for(exc: jwt.PyJWTError) -> str:
    """A short, fixed reason for a PyJWT error; never the library's own message."""
    if isinstance(exc, jwt.InvalidSignatureError):
        return "invalid signature"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "audience mismatch"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "issuer mismatch"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim: {exc.claim}"  # one of the names we required, not token data
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "algorithm not allowed"
    if isinstance(exc, jwt.InvalidKeyError):
        return "signing key rejected"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    return "invalid token"


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2) as seconds, None if absent; malformed ones fail."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthenticationFailed(f"malformed claim: {name}")
    return float(value)


def _claim_at(claims: Mapping[str, Any], path: list[str]) -> Any:
    """Follow a dotted claim path; keys may themselves contain dots (client ids often do).

    At each level the longest run of path segments that names a key wins, so
    ``resource_access.irmsia.api.roles`` finds the client ``irmsia.api``.
    """
    for take in range(len(path), 0, -1):
        name = ".".join(path[:take])
        if name not in claims:
            continue
        value = claims[name]
        if take == len(path):
            return value
        if isinstance(value, Mapping):
            found = _claim_at(value, path[take:])
            if found is not None:
                return found
    return None


def _small_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: value
        for name, value in claims.items()
        if len(json.dumps(value, separators=(",", ":"), default=str)) <= MAX_KEPT_CLAIM_CHARS
    }


def _parse_jwks(document: Mapping[str, Any]) -> dict[str, _PublicKey]:
    """The usable signature keys of a JWKS, by key id.

    Keys without a ``kid``, marked for encryption, of unknown type, carrying private
    material or failing to parse are skipped; a set with no usable key is an error.
    """
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ExternalServiceError("identity provider's JWKS has no key list")
    keys: dict[str, _PublicKey] = {}
    for entry in entries:
        key = _parse_jwk(entry)
        if key is not None:
            keys[entry["kid"]] = key
    if not keys:
        raise ExternalServiceError("identity provider's JWKS holds no usable signing key")
    return keys


def _parse_jwk(entry: Any) -> _PublicKey | None:
    if not isinstance(entry, dict):
        return None
    kid, kty, crv, alg = entry.get("kid"), entry.get("kty"), entry.get("crv"), entry.get("alg")
    if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
        return None
    if not isinstance(kty, str):
        return None
    parser = _KEY_PARSERS.get(kty)
    if parser is None or "d" in entry:  # a published private key is a provider bug: never use it
        return None
    if alg is not None and alg not in _SUPPORTED_ALGORITHMS:
        return None  # e.g. RSA-OAEP keys that Keycloak lists without ``use``
    try:
        public_key = parser(entry)
    except (jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None
    return _PublicKey(kty=kty, crv=crv if kty != "RSA" else None, alg=alg, key=public_key)
