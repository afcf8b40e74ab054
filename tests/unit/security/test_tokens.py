"""IRMSIA's own access tokens: what verify accepts and what it refuses, with which reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from irmsia.errors import AuthenticationFailed
from irmsia.security.tokens import AccessTokens

SECRET = b"s" * 32
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _tokens() -> AccessTokens:
    return AccessTokens(SECRET, ttl_seconds=300)


def _claims(tokens: AccessTokens) -> dict[str, object]:
    return jwt.decode(
        tokens.issue(user_id="u1", username="ann", role="clinician", now=NOW),
        options={"verify_signature": False},
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sub_key() -> bytes:  # how AccessTokens derives its signing key
    return hmac.new(SECRET, b"irmsia access-token v1", hashlib.sha256).digest()


def test_a_token_it_issued_verifies_with_its_claims() -> None:
    tokens = _tokens()
    claims = tokens.verify(tokens.issue(user_id="u1", username="ann", role="clinician", now=NOW), now=NOW)
    assert (claims.user_id, claims.username, claims.role) == ("u1", "ann", "clinician")
    assert claims.expires_at == NOW + timedelta(seconds=300)


@pytest.mark.parametrize("alg", ["none", "HS512", "HS384"])
def test_another_header_algorithm_is_refused_as_such(alg: str) -> None:
    tokens = _tokens()
    claims = _claims(tokens)
    if alg == "none":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        token = f"{header}.{_b64(json.dumps(claims).encode())}."
    else:  # signed with the right key, under an algorithm the verifier does not allow
        with warnings.catch_warnings():  # PyJWT warns that the key is short for SHA-384/512
            warnings.simplefilter("ignore")
            token = jwt.encode(claims, _sub_key(), algorithm=alg)
    with pytest.raises(AuthenticationFailed, match="token algorithm not accepted"):
        tokens.verify(token, now=NOW)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("signature", "invalid token signature"),
        ("key", "invalid token signature"),
        ("audience", "invalid token"),
        ("expired", "token expired"),
        ("garbage", "invalid token"),
    ],
)
def test_tampered_foreign_or_expired_tokens_are_refused(change: str, reason: str) -> None:
    tokens = _tokens()
    token = tokens.issue(user_id="u1", username="ann", role="clinician", now=NOW)
    now = NOW
    if change == "signature":
        head, body, signature = token.split(".")
        token = f"{head}.{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    elif change == "key":
        token = AccessTokens(b"t" * 32, ttl_seconds=300).issue(
            user_id="u1", username="ann", role="x", now=NOW
        )
    elif change == "audience":
        token = jwt.encode({**_claims(tokens), "aud": "someone-else"}, _sub_key(), algorithm="HS256")
    elif change == "expired":
        now = NOW + timedelta(seconds=301)
    else:
        token = "not.a.token"
    with pytest.raises(AuthenticationFailed, match=reason):
        tokens.verify(token, now=now)
