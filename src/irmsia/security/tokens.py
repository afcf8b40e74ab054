"""IRMSIA's own access tokens (JWT, HS256) and refresh-token secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from irmsia.errors import AuthenticationFailed

ISSUER = "irmsia"
AUDIENCE = "irmsia-api"
ALGORITHM = "HS256"


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    username: str
    role: str
    token_id: str
    expires_at: datetime


class AccessTokens:
    """Issue and check short-lived access tokens signed with a key derived from SECRET_KEY."""

    def __init__(self, secret_key: bytes, ttl_seconds: int) -> None:
        # A dedicated sub-key: SECRET_KEY also signs portal sessions.
        self._key = hmac.new(secret_key, b"irmsia access-token v1", hashlib.sha256).digest()
        self._ttl = timedelta(seconds=ttl_seconds)

    @property
    def ttl_seconds(self) -> int:
        return int(self._ttl.total_seconds())

    def issue(self, *, user_id: str, username: str, role: str, now: datetime) -> str:
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "name": username,
            "role": role,
            "jti": secrets.token_hex(8),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + self._ttl).timestamp()),
            "typ": "access",
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def looks_local(self, token: str) -> bool:
        """True if the token claims to be one of ours (issuer irmsia), unverified."""
        try:
            return jwt.decode(token, options={"verify_signature": False}).get("iss") == ISSUER
        except jwt.PyJWTError:
            return False

    def verify(self, token: str, *, now: datetime) -> AccessClaims:
        """Check signature, algorithm, issuer, audience and expiry against ``now``."""
        try:
            # One parse of the token (every request pays for it): PyJWT refuses any header
            # algorithm but ALGORITHM before it checks the signature.
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "jti"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidAlgorithmError:
            raise AuthenticationFailed("token algorithm not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationFailed("invalid token signature") from None
        except jwt.PyJWTError:
            raise AuthenticationFailed("invalid token") from None
        # Expiry checked against the injected clock, not the wall clock.
        if claims.get("typ") != "access":
            raise AuthenticationFailed("not an access token")
        if int(claims["exp"]) <= int(now.timestamp()):
            raise AuthenticationFailed("token expired")
        if int(claims.get("nbf", claims["iat"])) > int(now.timestamp()) + 30:
            raise AuthenticationFailed("token not yet valid")
        return AccessClaims(
            user_id=str(claims["sub"]),
            username=str(claims.get("name", "")),
            role=str(claims.get("role", "")),
            token_id=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo),
        )


def new_refresh_secret() -> str:
    """A random refresh token (256 bits) as sent to the client."""
    return secrets.token_urlsafe(32)


def refresh_digest(token: str) -> str:
    """What the database stores for a refresh token (SHA-256 hex)."""
    return hashlib.sha256(token.encode()).hexdigest()
