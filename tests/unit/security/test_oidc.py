"""OIDCVerifier against a real loopback identity provider serving discovery and a JWKS.

Every key is generated here; every time comes from an injected clock fixed at NOW, so
nothing depends on the real time or on how fast the machine is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

from irmsia.errors import AuthenticationFailed, ConfigError, ExternalServiceError, ServiceTimeout
from irmsia.security.oidc import MAX_TOKEN_CHARS, OIDCIdentity, OIDCVerifier

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
AUDIENCE = "api://irmsia"
REALM_PATH = "/realms/irmsia"
JWKS_PATH = REALM_PATH + "/protocol/openid-connect/certs"
DISCOVERY_PATH = REALM_PATH + "/.well-known/openid-configuration"
MIN_REFRESH_S = 30


# --- keys --------------------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey  # kid "rsa-1" without "alg" (as Entra ID does), "rsa-pinned" with RS256
    rotated: rsa.RSAPrivateKey  # kid "rsa-2", published only after a rotation
    attacker: rsa.RSAPrivateKey  # never published
    encryption: rsa.RSAPrivateKey  # kid "enc-1", published with use=enc (as Keycloak does)
    ec: ec.EllipticCurvePrivateKey  # kid "ec-1", P-256, published with alg=ES256
    ed: ed25519.Ed25519PrivateKey  # kid "ed-1"


@pytest.fixture(scope="module")
def keys() -> Keys:
    def new_rsa() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(
        rsa=new_rsa(),
        rotated=new_rsa(),
        attacker=new_rsa(),
        encryption=new_rsa(),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ed=ed25519.Ed25519PrivateKey.generate(),
    )


def public_jwk(private_key: Any, kid: str, **extra: str) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk_dict = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk_dict = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk_dict = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk_dict, "kid": kid, **extra}


def initial_jwks(keys: Keys) -> dict[str, Any]:
    return {
        "keys": [
            public_jwk(keys.rsa, "rsa-1", use="sig"),
            public_jwk(keys.rsa, "rsa-pinned", use="sig", alg="RS256"),
            public_jwk(keys.encryption, "enc-1", use="enc", alg="RSA-OAEP"),
            public_jwk(keys.ec, "ec-1", use="sig", alg="ES256"),
            public_jwk(keys.ed, "ed-1", use="sig"),
        ]
    }


# --- the loopback identity provider -----------------------------------------------------
@dataclass
class FakeIdP:
    """What the loopback server serves, and what it was asked for."""

    jwks: dict[str, Any]
    issuer: str = ""
    discovery_issuer: str | None = None  # None: the real issuer
    status: int = 200
    hang: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def jwks_url(self) -> str:
        return self.issuer.removesuffix(REALM_PATH) + JWKS_PATH


class IdPServer(ThreadingHTTPServer):
    daemon_threads = True
    idp: FakeIdP

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (the timeout test) is expected; stay quiet."""


class IdPHandler(BaseHTTPRequestHandler):
    server: IdPServer

    def do_GET(self) -> None:
        idp = self.server.idp
        with idp.lock:
            name = {DISCOVERY_PATH: "discovery", JWKS_PATH: "jwks"}.get(self.path, "other")
            idp.hits[name] += 1
        if idp.hang:
            idp.release.wait(timeout=10)
        if name == "discovery":
            body: Any = {
                "issuer": idp.discovery_issuer or idp.issuer,
                "jwks_uri": idp.jwks_url,
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        elif name == "jwks":
            body = idp.jwks
        else:
            self.send_error(404)
            return
        payload = json.dumps(body).encode()
        self.send_response(idp.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""


@pytest.fixture
def idp(keys: Keys) -> Iterator[FakeIdP]:
    state = FakeIdP(jwks=initial_jwks(keys))
    server = IdPServer(("127.0.0.1", 0), IdPHandler)
    server.idp = state
    state.issuer = f"http://127.0.0.1:{server.server_address[1]}{REALM_PATH}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_verifier(idp: FakeIdP, http: httpx.Client, clock: Clock) -> Callable[..., OIDCVerifier]:
    def build(**overrides: Any) -> OIDCVerifier:
        options: dict[str, Any] = {
            "http": http,
            "clock": clock,
            "jwks_min_refresh_interval_s": MIN_REFRESH_S,
            **overrides,
        }
        return OIDCVerifier(idp.issuer, AUDIENCE, **options)

    return build


# --- tokens ------------------------------------------------------------------------
def claims_for(idp: FakeIdP, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": idp.issuer,
        "aud": AUDIENCE,
        "sub": "user-7f3a",
        "iat": int(NOW.timestamp()),
        "nbf": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 300,
        "preferred_username": "dr.synthetic",
        "roles": ["radiologist"],
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def sign(private_key: Any, claims: dict[str, Any], *, kid: str = "rsa-1", alg: str = "RS256") -> str:
    return jwt.encode(claims, private_key, algorithm=alg, headers={"kid": kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any], kid: str = "rsa-1") -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def hmac_token(claims: dict[str, Any], secret: bytes, kid: str = "rsa-1") -> str:
    """An HS256 token keyed with ``secret``: built by hand, as PyJWT refuses PEM secrets."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def public_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- accepted tokens ---------------------------------------------------------------------
def test_valid_rs256_token_gives_identity(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    identity = make_verifier().verify(sign(keys.rsa, claims_for(idp)))

    assert identity.subject == "user-7f3a"
    assert identity.username == "dr.synthetic"
    assert identity.roles == frozenset({"radiologist"})
    assert identity.issuer == idp.issuer
    assert identity.expires_at == NOW + timedelta(seconds=300)


@pytest.mark.parametrize(
    ("private_key_name", "kid", "alg"),
    [("rsa", "rsa-1", "PS256"), ("rsa", "rsa-1", "RS512"), ("ec", "ec-1", "ES256"), ("ed", "ed-1", "EdDSA")],
)
def test_each_key_type_verifies_its_own_algorithms(
    make_verifier: Callable[..., OIDCVerifier],
    idp: FakeIdP,
    keys: Keys,
    private_key_name: str,
    kid: str,
    alg: str,
) -> None:
    token = sign(getattr(keys, private_key_name), claims_for(idp), kid=kid, alg=alg)

    assert make_verifier().verify(token).subject == "user-7f3a"


def test_azure_style_app_roles_are_mapped_and_upn_is_the_username(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    claims = claims_for(
        idp,
        aud=[AUDIENCE, "00000003-0000-0000-c000-000000000000"],
        preferred_username=None,
        upn="synthetic.reader@example.test",
        roles=["IRMSIA.Radiologist", "IRMSIA.Auditor", "Some.Other.Role"],
    )
    verifier = make_verifier(role_map={"IRMSIA.Radiologist": "radiologist", "IRMSIA.Auditor": "auditor"})

    identity = verifier.verify(sign(keys.rsa, claims))

    assert identity.roles == frozenset({"radiologist", "auditor"})
    assert identity.username == "synthetic.reader@example.test"


def test_role_claim_may_be_a_space_or_comma_separated_string(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    claims = claims_for(idp, irmsia_roles="clinician uploader,auditor ,  unknown")

    identity = make_verifier(role_claim="irmsia_roles").verify(sign(keys.rsa, claims))

    assert identity.roles == frozenset({"clinician", "uploader", "auditor"})


def test_keycloak_realm_roles_are_read_from_a_nested_claim(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    claims = claims_for(
        idp, roles=None, realm_access={"roles": ["irmsia-admin", "offline_access", "uma_authorization"]}
    )
    verifier = make_verifier(role_claim="realm_access.roles", role_map={"irmsia-admin": "admin"})

    assert verifier.verify(sign(keys.rsa, claims)).roles == frozenset({"admin"})


def test_keycloak_client_roles_are_found_when_the_client_id_contains_dots(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    claims = claims_for(idp, roles=None, resource_access={"irmsia.api": {"roles": ["uploader"]}})

    verifier = make_verifier(role_claim="resource_access.irmsia.api.roles")

    assert verifier.verify(sign(keys.rsa, claims)).roles == frozenset({"uploader"})


def test_with_a_role_map_unmapped_names_grant_nothing_even_if_they_match_a_role(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    # Keycloak's master realm has a role literally called "admin": it must not leak through.
    claims = claims_for(idp, roles=["admin", "Radiology"])

    identity = make_verifier(role_map={"Radiology": "radiologist"}).verify(sign(keys.rsa, claims))

    assert identity.roles == frozenset({"radiologist"})


def test_names_that_are_not_platform_roles_are_dropped(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    claims = claims_for(idp, roles=["superuser", "ADMIN", "clinician", 42])

    assert make_verifier().verify(sign(keys.rsa, claims)).roles == frozenset({"clinician"})


def test_missing_role_claim_gives_no_roles(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    assert make_verifier().verify(sign(keys.rsa, claims_for(idp, roles=None))).roles == frozenset()


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"preferred_username": "pu", "upn": "upn", "email": "e@example.test"}, "pu"),
        ({"upn": "upn", "email": "e@example.test"}, "upn"),
        ({"email": "e@example.test"}, "e@example.test"),
        ({}, "user-7f3a"),
    ],
)
def test_username_falls_back_from_preferred_username_to_upn_to_email_to_subject(
    make_verifier: Callable[..., OIDCVerifier],
    idp: FakeIdP,
    keys: Keys,
    present: dict[str, str],
    expected: str,
) -> None:
    claims = claims_for(idp, **{"preferred_username": None, **present})

    assert make_verifier().verify(sign(keys.rsa, claims)).username == expected


def test_identity_keeps_small_claims_drops_large_ones_and_hides_them_from_repr(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    groups = [str(uuid.UUID(int=n)) for n in range(200)]  # an Entra ID group list
    claims = claims_for(idp, groups=groups, name="Synthetic Reader")

    identity = make_verifier().verify(sign(keys.rsa, claims))

    assert "groups" not in identity.claims
    assert identity.claims["name"] == "Synthetic Reader"
    assert "Synthetic Reader" not in repr(identity)
    with pytest.raises(TypeError):
        identity.claims["name"] = "changed"  # type: ignore[index]


def test_identity_is_frozen(make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys) -> None:
    identity: OIDCIdentity = make_verifier().verify(sign(keys.rsa, claims_for(idp)))

    with pytest.raises(AttributeError):
        identity.roles = frozenset({"admin"})  # type: ignore[misc]


# --- times -----------------------------------------------------------------------------
def test_recently_expired_token_is_accepted_within_leeway(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    token = sign(keys.rsa, claims_for(idp, exp=int(NOW.timestamp()) - 29))

    assert make_verifier(leeway_s=30).verify(token).subject == "user-7f3a"


def test_token_expired_beyond_leeway_is_rejected(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    token = sign(keys.rsa, claims_for(idp, exp=int(NOW.timestamp()) - 31))

    with pytest.raises(AuthenticationFailed, match=r"^token expired$"):
        make_verifier(leeway_s=30).verify(token)


def test_expiry_is_judged_by_the_injected_clock(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys, clock: Clock
) -> None:
    verifier = make_verifier(leeway_s=0)
    token = sign(keys.rsa, claims_for(idp))
    assert verifier.verify(token).subject == "user-7f3a"

    clock.advance(300)

    with pytest.raises(AuthenticationFailed, match=r"^token expired$"):
        verifier.verify(token)


def test_naive_clock_is_a_configuration_error(idp: FakeIdP, http: httpx.Client, keys: Keys) -> None:
    verifier = OIDCVerifier(idp.issuer, AUDIENCE, http=http, clock=lambda: NOW.replace(tzinfo=None))

    with pytest.raises(ConfigError):
        verifier.verify(sign(keys.rsa, claims_for(idp)))


# --- rejected tokens ---------------------------------------------------------------------
TokenBuilder = Callable[[FakeIdP, Keys], str]
NOW_S = int(NOW.timestamp())

REJECTED: dict[str, tuple[TokenBuilder, str]] = {
    "expired": (lambda i, k: sign(k.rsa, claims_for(i, exp=NOW_S - 3600)), "token expired"),
    "not yet valid": (lambda i, k: sign(k.rsa, claims_for(i, nbf=NOW_S + 600)), "token not yet valid"),
    "issued in the future": (
        lambda i, k: sign(k.rsa, claims_for(i, iat=NOW_S + 600)),
        "token issued in the future",
    ),
    "wrong issuer": (
        lambda i, k: sign(k.rsa, claims_for(i, iss="https://login.example.test/other")),
        "issuer mismatch",
    ),
    "wrong audience": (
        lambda i, k: sign(k.rsa, claims_for(i, aud="api://someone-else")),
        "audience mismatch",
    ),
    "audience list without ours": (
        lambda i, k: sign(k.rsa, claims_for(i, aud=["api://a", "api://b"])),
        "audience mismatch",
    ),
    "no exp": (lambda i, k: sign(k.rsa, claims_for(i, exp=None)), "missing claim: exp"),
    "no aud": (lambda i, k: sign(k.rsa, claims_for(i, aud=None)), "missing claim: aud"),
    "no sub": (lambda i, k: sign(k.rsa, claims_for(i, sub=None)), "missing claim: sub"),
    "exp not a number": (lambda i, k: sign(k.rsa, claims_for(i, exp="tomorrow")), "malformed claim: exp"),
    "forged signature, same kid": (lambda i, k: sign(k.attacker, claims_for(i)), "invalid signature"),
    "alg none": (lambda i, k: unsigned_token(claims_for(i)), "unsigned token"),
    "hs256 keyed with the rsa public key pem": (
        lambda i, k: hmac_token(claims_for(i), public_pem(k.rsa)),
        "algorithm not allowed",
    ),
    "es256 header on an rsa key": (
        lambda i, k: sign(k.ec, claims_for(i), kid="rsa-1", alg="ES256"),
        "algorithm does not match the signing key",
    ),
    "rs256 header on an ec key": (
        lambda i, k: sign(k.rsa, claims_for(i), kid="ec-1", alg="RS256"),
        "algorithm does not match the signing key",
    ),
    "ps256 on a key published for rs256 only": (
        lambda i, k: sign(k.rsa, claims_for(i), kid="rsa-pinned", alg="PS256"),
        "algorithm does not match the signing key",
    ),
    "encryption key used for signing": (
        lambda i, k: sign(k.encryption, claims_for(i), kid="enc-1"),
        "unknown signing key",
    ),
    "unknown kid": (lambda i, k: sign(k.attacker, claims_for(i), kid="nobody"), "unknown signing key"),
    "no kid": (
        lambda i, k: jwt.encode(claims_for(i), k.rsa, algorithm="RS256"),
        "token names no signing key",
    ),
    "garbage": (lambda i, k: "garbage-header-xyz.garbage-payload.garbage-signature", "malformed token"),
}


@pytest.mark.parametrize("case", list(REJECTED), ids=list(REJECTED))
def test_invalid_token_is_rejected_with_a_short_reason_that_never_echoes_it(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys, case: str
) -> None:
    build, reason = REJECTED[case]
    token = build(idp, keys)

    with pytest.raises(AuthenticationFailed) as caught:
        make_verifier().verify(token)

    assert caught.value.detail == reason
    for part in {token, *token.split(".")} - {""}:
        assert part not in str(caught.value)
        assert part not in repr(caught.value)


def test_tampered_payload_fails_the_signature_check(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    header, _, signature = sign(keys.rsa, claims_for(idp, roles=["uploader"])).split(".")
    payload = b64url(json.dumps(claims_for(idp, roles=["admin"])).encode())

    with pytest.raises(AuthenticationFailed, match=r"^invalid signature$"):
        make_verifier().verify(f"{header}.{payload}.{signature}")


@pytest.mark.parametrize(
    "public_format",
    [serialization.PublicFormat.SubjectPublicKeyInfo, serialization.PublicFormat.PKCS1],
    ids=["spki", "pkcs1"],
)
def test_hmac_token_keyed_with_the_published_rsa_key_is_refused_before_any_key_is_used(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys, public_format: Any
) -> None:
    # The classic RS/HS confusion: the attacker knows the public key, so a verifier that
    # let the header pick HMAC and fed it the key bytes would accept this token.
    secret = keys.rsa.public_key().public_bytes(serialization.Encoding.PEM, public_format)
    token = hmac_token(claims_for(idp, roles=["admin"]), secret)
    signing_input, _, signature = token.rpartition(".")
    assert hmac.compare_digest(
        signature, b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    )

    with pytest.raises(AuthenticationFailed, match=r"^algorithm not allowed$"):
        make_verifier().verify(token)
    assert idp.hits["jwks"] == 0


@pytest.mark.parametrize("algs", [("RS256", "HS256"), ("none",), ("HS512",), ("RS256", "XYZ1"), ()])
def test_symmetric_none_or_unknown_algorithms_cannot_be_configured(
    idp: FakeIdP, http: httpx.Client, algs: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError):
        OIDCVerifier(idp.issuer, AUDIENCE, http=http, clock=Clock(), allowed_algs=algs)


def test_algorithm_outside_the_configured_list_is_refused(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    token = sign(keys.rsa, claims_for(idp), alg="PS256")

    with pytest.raises(AuthenticationFailed, match=r"^algorithm not allowed$"):
        make_verifier(allowed_algs=("RS256",)).verify(token)


def test_role_map_pointing_outside_platform_roles_is_a_configuration_error(
    idp: FakeIdP, http: httpx.Client
) -> None:
    with pytest.raises(ConfigError):
        OIDCVerifier(idp.issuer, AUDIENCE, http=http, clock=Clock(), role_map={"Radiology": "superuser"})


def test_oversized_token_is_refused_without_contacting_the_provider(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP
) -> None:
    with pytest.raises(AuthenticationFailed, match=r"^token too large$"):
        make_verifier().verify("a" * (MAX_TOKEN_CHARS + 1))
    assert sum(idp.hits.values()) == 0


# --- discovery and the JWKS cache --------------------------------------------------------------
def test_discovery_and_jwks_are_fetched_once_for_many_tokens(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    verifier = make_verifier()

    for n in range(5):
        verifier.verify(sign(keys.rsa, claims_for(idp, sub=f"user-{n}")))

    assert idp.hits == Counter({"discovery": 1, "jwks": 1})


def test_jwks_is_refetched_after_its_ttl_but_discovery_is_not(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys, clock: Clock
) -> None:
    verifier = make_verifier(jwks_cache_ttl_s=3600, leeway_s=0)
    verifier.verify(sign(keys.rsa, claims_for(idp)))

    clock.advance(3600)
    later = NOW_S + 3600
    verifier.verify(sign(keys.rsa, claims_for(idp, iat=later, nbf=later, exp=later + 300)))

    assert idp.hits == Counter({"discovery": 1, "jwks": 2})


def test_configured_jwks_url_skips_discovery(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    make_verifier(jwks_url=idp.jwks_url).verify(sign(keys.rsa, claims_for(idp)))

    assert idp.hits == Counter({"jwks": 1})


def test_discovery_naming_another_issuer_is_a_configuration_error(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    idp.discovery_issuer = "https://impostor.example.test/realms/irmsia"

    with pytest.raises(ConfigError):
        make_verifier().verify(sign(keys.rsa, claims_for(idp)))
    assert idp.hits["jwks"] == 0


def test_unknown_kid_triggers_one_refresh_and_succeeds_after_rotation(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys, clock: Clock
) -> None:
    verifier = make_verifier()
    verifier.verify(sign(keys.rsa, claims_for(idp)))
    idp.jwks = {"keys": [public_jwk(keys.rotated, "rsa-2", use="sig")]}
    clock.advance(MIN_REFRESH_S)

    identity = verifier.verify(sign(keys.rotated, claims_for(idp), kid="rsa-2"))
    verifier.verify(sign(keys.rotated, claims_for(idp, sub="another"), kid="rsa-2"))

    assert identity.subject == "user-7f3a"
    assert idp.hits["jwks"] == 2


def test_rotated_out_key_is_no_longer_accepted(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys, clock: Clock
) -> None:
    verifier = make_verifier()
    verifier.verify(sign(keys.rsa, claims_for(idp)))
    idp.jwks = {"keys": [public_jwk(keys.rotated, "rsa-2", use="sig")]}
    clock.advance(MIN_REFRESH_S)
    verifier.verify(sign(keys.rotated, claims_for(idp), kid="rsa-2"))

    with pytest.raises(AuthenticationFailed, match=r"^unknown signing key$"):
        verifier.verify(sign(keys.rsa, claims_for(idp)))


def test_flood_of_unknown_kids_refetches_at_most_once_per_interval(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys, clock: Clock
) -> None:
    verifier = make_verifier()
    verifier.verify(sign(keys.rsa, claims_for(idp)))

    def flood() -> None:
        for _ in range(25):
            with pytest.raises(AuthenticationFailed, match=r"^unknown signing key$"):
                verifier.verify(sign(keys.attacker, claims_for(idp), kid=uuid.uuid4().hex))

    flood()
    assert idp.hits["jwks"] == 1  # the first fetch was just now: no refresh allowed yet

    clock.advance(MIN_REFRESH_S)
    flood()
    assert idp.hits["jwks"] == 2

    clock.advance(MIN_REFRESH_S - 1)
    flood()
    assert idp.hits["jwks"] == 2


def test_concurrent_first_requests_share_one_fetch(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    verifier = make_verifier()
    token = sign(keys.rsa, claims_for(idp))
    results: list[str] = []

    def verify() -> None:
        results.append(verifier.verify(token).subject)

    threads = [threading.Thread(target=verify) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert results == ["user-7f3a"] * 8
    assert idp.hits == Counter({"discovery": 1, "jwks": 1})


# --- an unavailable provider ---------------------------------------------------------------
def test_unreachable_provider_is_an_external_service_error(http: httpx.Client, keys: Keys) -> None:
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    issuer = f"http://127.0.0.1:{port}{REALM_PATH}"
    token = sign(keys.rsa, {"iss": issuer, "aud": AUDIENCE, "sub": "s", "exp": NOW_S + 60})

    with pytest.raises(ExternalServiceError) as caught:
        OIDCVerifier(issuer, AUDIENCE, http=http, clock=Clock()).verify(token)

    assert not isinstance(caught.value, AuthenticationFailed)
    assert token not in str(caught.value)


@pytest.mark.parametrize("status", [500, 503, 404])
def test_provider_error_status_is_an_external_service_error(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys, status: int
) -> None:
    idp.status = status

    with pytest.raises(ExternalServiceError, match=str(status)):
        make_verifier().verify(sign(keys.rsa, claims_for(idp)))


def test_jwks_without_usable_keys_is_an_external_service_error(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    idp.jwks = {
        "keys": [public_jwk(keys.encryption, "enc-1", use="enc"), {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]
    }

    with pytest.raises(ExternalServiceError, match="no usable signing key"):
        make_verifier().verify(sign(keys.rsa, claims_for(idp)))


def test_slow_provider_is_a_service_timeout(idp: FakeIdP, keys: Keys) -> None:
    idp.hang = True
    with httpx.Client(timeout=0.2) as impatient:
        verifier = OIDCVerifier(idp.issuer, AUDIENCE, http=impatient, clock=Clock())

        with pytest.raises(ServiceTimeout):
            verifier.verify(sign(keys.rsa, claims_for(idp)))


def test_prefetch_loads_keys_so_verify_needs_no_request(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    verifier = make_verifier()
    verifier.prefetch()
    assert idp.hits == Counter({"discovery": 1, "jwks": 1})

    verifier.verify(sign(keys.rsa, claims_for(idp)))

    assert idp.hits == Counter({"discovery": 1, "jwks": 1})


def test_short_rsa_key_published_by_the_provider_is_refused(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP
) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - weak on purpose
    idp.jwks = {"keys": [public_jwk(weak, "weak-1", use="sig")]}
    with warnings.catch_warnings():  # PyJWT warns when *signing* with it; only the verifier is under test
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        token = sign(weak, claims_for(idp), kid="weak-1")

    with pytest.raises(AuthenticationFailed, match=r"^signing key rejected$"):
        make_verifier().verify(token)


# --- ID tokens of the portal's sign-in, and the discovery document --------------------------------
CLIENT_ID = "irmsia-portal"
NONCE = "n-0S6_WzA2Mj"


def id_claims_for(idp: FakeIdP, **overrides: Any) -> dict[str, Any]:
    return claims_for(idp, **{"aud": CLIENT_ID, "nonce": NONCE, **overrides})


def test_id_token_for_the_client_with_the_nonce_is_accepted(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    identity = make_verifier().verify_id_token(
        sign(keys.rsa, id_claims_for(idp)), client_id=CLIENT_ID, nonce=NONCE
    )

    assert identity.subject == "user-7f3a"
    assert identity.roles == frozenset({"radiologist"})


ID_REJECTED: dict[str, tuple[dict[str, Any], str]] = {
    "api audience": ({"aud": AUDIENCE}, "audience mismatch"),
    "several audiences, no azp": ({"aud": [CLIENT_ID, "other"]}, "missing claim: azp"),
    "azp of another client": ({"azp": "other"}, "authorized party mismatch"),
    "no nonce": ({"nonce": None}, "missing claim: nonce"),
    "another nonce": ({"nonce": "n-other"}, "nonce mismatch"),
    "nonce not a string": ({"nonce": 12}, "nonce mismatch"),
    "no iat": ({"iat": None}, "missing claim: iat"),
    "expired": ({"exp": NOW_S - 3600}, "token expired"),
}


@pytest.mark.parametrize("case", list(ID_REJECTED), ids=list(ID_REJECTED))
def test_invalid_id_token_is_rejected(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys, case: str
) -> None:
    overrides, reason = ID_REJECTED[case]

    with pytest.raises(AuthenticationFailed) as caught:
        make_verifier().verify_id_token(
            sign(keys.rsa, id_claims_for(idp, **overrides)), client_id=CLIENT_ID, nonce=NONCE
        )

    assert caught.value.detail == reason


def test_id_token_with_several_audiences_needs_azp_naming_the_client(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    token = sign(keys.rsa, id_claims_for(idp, aud=[CLIENT_ID, AUDIENCE], azp=CLIENT_ID))

    assert make_verifier().verify_id_token(token, client_id=CLIENT_ID, nonce=NONCE).subject == "user-7f3a"


def test_refreshed_id_token_may_omit_the_nonce_but_not_change_it(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    verifier = make_verifier()
    without = sign(keys.rsa, id_claims_for(idp, nonce=None))
    other = sign(keys.rsa, id_claims_for(idp, nonce="n-other"))

    assert verifier.verify_id_token(without, client_id=CLIENT_ID, nonce=NONCE, nonce_required=False)
    with pytest.raises(AuthenticationFailed, match=r"^nonce mismatch$"):
        verifier.verify_id_token(other, client_id=CLIENT_ID, nonce=NONCE, nonce_required=False)


def test_id_token_alg_none_and_hs256_are_refused_like_bearer_tokens(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    verifier = make_verifier()
    for token, reason in (
        (unsigned_token(id_claims_for(idp)), "unsigned token"),
        (hmac_token(id_claims_for(idp), public_pem(keys.rsa)), "algorithm not allowed"),
    ):
        with pytest.raises(AuthenticationFailed) as caught:
            verifier.verify_id_token(token, client_id=CLIENT_ID, nonce=NONCE)
        assert caught.value.detail == reason


def test_metadata_shares_the_one_discovery_fetch_with_the_jwks(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, keys: Keys
) -> None:
    verifier = make_verifier()
    verifier.verify(sign(keys.rsa, claims_for(idp)))

    metadata = verifier.metadata()

    assert metadata.issuer == idp.issuer
    assert metadata.jwks_uri == idp.jwks_url
    assert metadata.authorization_endpoint is None  # this fake announces no endpoints
    assert metadata.code_challenge_methods is None
    assert idp.hits == Counter({"discovery": 1, "jwks": 1})


def test_metadata_is_fetched_again_after_its_ttl(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP, clock: Clock
) -> None:
    verifier = make_verifier(discovery_ttl_s=600)
    verifier.metadata()
    clock.advance(599)
    verifier.metadata()
    assert idp.hits["discovery"] == 1

    clock.advance(1)
    verifier.metadata()

    assert idp.hits["discovery"] == 2


def test_metadata_of_an_impostor_issuer_is_a_configuration_error(
    make_verifier: Callable[..., OIDCVerifier], idp: FakeIdP
) -> None:
    idp.discovery_issuer = "https://impostor.example.test/realms/irmsia"

    with pytest.raises(ConfigError):
        make_verifier().metadata()
