"""Portal sessions: an opaque id in a signed cookie; the token pair stays on the server.

The browser only ever holds ``<session id>.<signature>``. The access and refresh tokens the
``Authenticator`` issued at login live in a ``SessionStore`` inside the server process, so
no token can be read by page scripts or leak through the cookie. Each request resolves the
cookie to a principal through the same ``Authenticator.principal_for`` the REST API uses
(a disabled account or a changed role takes effect at once) and rotates the refresh token
shortly before the access token expires. Refreshes of one session are serialised: the
viewer fetches many frames in parallel, and two concurrent refreshes with the same token
would look like token theft and revoke the whole family.

Sessions opened by the OpenID Connect sign-in (``open_federated``) hold no IRMSIA tokens:
they keep the principal the provider's ID token named (``PortalSession.federated``) and end
when the provider's access token expires, unless the provider gave a refresh token, which
``OIDCLogin.refresh`` uses shortly before then (serialised in the same way).

The store is in memory: sessions end when the process restarts, and a deployment with
several server processes needs sticky sessions or a shared store (see the portal notes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from irmsia.clock import Clock
from irmsia.errors import AuthenticationFailed, ExternalServiceError, PermissionDenied
from irmsia.security.policy import Principal
from irmsia.usecases.auth import Authenticator, TokenPair
from irmsia.usecases.context import RequestContext
from irmsia.usecases.oidc_login import FederatedSession, OIDCLogin

SESSION_COOKIE = "irmsia_session"
LOGIN_COOKIE = "irmsia_login"  # pre-login CSRF nonce (double-submit)


@dataclass(frozen=True)
class SessionPolicy:
    """How long a portal session lives.

    ``idle``: ended after this long without a request. ``lifetime``: ended this long after
    login whatever the activity. ``refresh_margin``: the refresh token is rotated when the
    access token has less than this left. ``max_sessions``: the oldest sessions are dropped
    beyond this many, so anonymous floods of logins cannot exhaust memory.
    """

    idle: timedelta = timedelta(minutes=30)
    lifetime: timedelta = timedelta(hours=12)
    refresh_margin: timedelta = timedelta(seconds=60)
    max_sessions: int = 10_000


@dataclass(frozen=True)
class Flash:
    """A one-shot message shown on the next page of the same session."""

    kind: str  # success | error | info
    text: str


@dataclass
class PortalSession:
    """One logged-in browser. Mutable fields change under ``lock`` only."""

    id: str
    access_token: str
    refresh_token: str
    access_expires: datetime
    csrf_token: str
    created: datetime
    last_seen: datetime
    flashes: list[Flash] = field(default_factory=list)
    federated: FederatedSession | None = None  # set for OIDC sign-ins (no IRMSIA tokens then)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def flash(self, kind: str, text: str) -> None:
        with self.lock:
            self.flashes.append(Flash(kind, text))

    def take_flashes(self) -> list[Flash]:
        with self.lock:
            taken, self.flashes = self.flashes, []
            return taken


class CookieSigner:
    """HMAC-SHA256 signatures for cookie values, with a key derived from SECRET_KEY for this purpose."""

    def __init__(self, secret_key: bytes, purpose: str) -> None:
        # A dedicated sub-key: SECRET_KEY also signs access tokens.
        self._key = hmac.new(secret_key, f"irmsia portal {purpose} v1".encode(), hashlib.sha256).digest()

    def _mac(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, value: str) -> str:
        return f"{value}.{self._mac(value)}"

    def unsign(self, signed: str | None) -> str | None:
        """The value if the signature matches, else None (compared in constant time)."""
        if not signed or "." not in signed:
            return None
        value, _, mac = signed.rpartition(".")
        return value if hmac.compare_digest(mac, self._mac(value)) else None


class SessionStore:
    """The sessions of one server process, by id; expired ones are dropped when seen."""

    def __init__(self, clock: Clock, policy: SessionPolicy) -> None:
        self._clock = clock
        self._policy = policy
        self._sessions: OrderedDict[str, PortalSession] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, pair: TokenPair) -> PortalSession:
        now = self._clock()
        return self._add(
            PortalSession(
                id=secrets.token_urlsafe(32),
                access_token=pair.access_token,
                refresh_token=pair.refresh_token,
                access_expires=now + timedelta(seconds=pair.expires_in),
                csrf_token=secrets.token_urlsafe(32),
                created=now,
                last_seen=now,
            )
        )

    def create_federated(self, federated: FederatedSession) -> PortalSession:
        now = self._clock()
        return self._add(
            PortalSession(
                id=secrets.token_urlsafe(32),
                access_token="",
                refresh_token="",
                access_expires=federated.expires_at,
                csrf_token=secrets.token_urlsafe(32),
                created=now,
                last_seen=now,
                federated=federated,
            )
        )

    def _add(self, session: PortalSession) -> PortalSession:
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self._policy.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> PortalSession | None:
        """The live session, or None when unknown, idle too long or past its lifetime."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self._policy.idle or now - session.created > self._policy.lifetime:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)


@dataclass
class Resolved:
    """What a request's cookie stands for."""

    session: PortalSession | None
    principal: Principal | None


class PortalSessions:
    """Log in, resolve and log out portal sessions, through the same ``Authenticator`` as the API."""

    def __init__(
        self,
        auth: Authenticator,
        store: SessionStore,
        signer: CookieSigner,
        clock: Clock,
        policy: SessionPolicy,
        federation: OIDCLogin | None = None,
    ) -> None:
        self._auth = auth
        self._store = store
        self._signer = signer
        self._clock = clock
        self._policy = policy
        self._federation = federation

    @property
    def store(self) -> SessionStore:
        return self._store

    def login(self, ctx: RequestContext, username: str, password: str) -> tuple[PortalSession, str]:
        """Check the password (throttled and audited by the Authenticator) and open a new session.

        Returns the session and the signed cookie value. A new id at every login, so a
        session id planted before login is worthless after it. Raises what
        ``Authenticator.login`` raises.
        """
        pair = self._auth.login(ctx, username, password)
        session = self._store.create(pair)
        return session, self._signer.sign(session.id)

    def open_federated(self, federated: FederatedSession) -> tuple[PortalSession, str]:
        """Open a session for a completed OIDC sign-in (already audited); a new id, as for ``login``."""
        session = self._store.create_federated(federated)
        return session, self._signer.sign(session.id)

    def resolve(self, cookie: str | None, ctx: RequestContext) -> Resolved:
        """The session and principal behind a cookie; an unusable session is dropped."""
        session_id = self._signer.unsign(cookie)
        session = self._store.get(session_id) if session_id else None
        if session is None:
            return Resolved(None, None)
        if session.federated is not None:
            return self._resolve_federated(session, ctx)
        try:
            with session.lock:
                if session.access_expires - self._clock() <= self._policy.refresh_margin:
                    pair = self._auth.refresh(ctx, session.refresh_token)
                    session.access_token, session.refresh_token = pair.access_token, pair.refresh_token
                    session.access_expires = self._clock() + timedelta(seconds=pair.expires_in)
                access = session.access_token
            principal = self._auth.principal_for(access)
        except AuthenticationFailed:
            # Refresh refused (revoked, expired, account disabled) or the account is gone.
            self._store.drop(session.id)
            return Resolved(None, None)
        return Resolved(session, principal)

    def _resolve_federated(self, session: PortalSession, ctx: RequestContext) -> Resolved:
        """An OIDC session: renewed through the provider near its expiry, ended at it."""
        with session.lock:
            federated = session.federated
            assert federated is not None
            now = self._clock()
            if federated.expires_at - now <= self._policy.refresh_margin:
                if federated.refresh_token is not None and self._federation is not None:
                    try:
                        federated = self._federation.refresh(ctx, federated)
                        session.federated = federated
                        session.access_expires = federated.expires_at
                    except (AuthenticationFailed, PermissionDenied):
                        federated = None  # refused, or the account lost its roles: sign out
                    except ExternalServiceError:
                        pass  # the provider is down: keep the session until it really expires
                if federated is None or federated.expires_at <= now:
                    self._store.drop(session.id)
                    return Resolved(None, None)
            return Resolved(session, federated.principal)

    def logout(self, ctx: RequestContext, session: PortalSession) -> str | None:
        """Revoke the session's refresh-token family (audited) and forget the session.

        Returns where to send the browser next when that is not the sign-in page: the OIDC
        provider's end-session URL, for sessions that came from it.
        """
        self._store.drop(session.id)
        with session.lock:
            refresh = session.refresh_token
            federated = session.federated
        if federated is not None:
            return self._federation.logout(ctx, federated) if self._federation is not None else None
        self._auth.logout(ctx, refresh)
        return None


def new_nonce() -> str:
    """A random token for forms (CSRF) and pre-login cookies."""
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens; missing values never match."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
