"""Sign in to the portal through the configured OpenID provider (authorization code + PKCE).

``OIDCLogin.begin`` creates a state, a nonce and a PKCE verifier, keeps them on the server
bound to a random value the browser holds in a cookie, and returns the provider's
authorization URL. ``complete`` takes the provider's answer: the state must be known, not
expired and not used before (it is spent on first sight, whatever happens next), the
cookie must match, the code is exchanged at the token endpoint with the verifier, the ID
token is checked (signature against the provider's JWKS, issuer, audience = client id,
expiry, nonce, algorithm rules) and the roles come from the configured role claim through
the role map, from the ID token or else from the access token. ``refresh`` renews a
session with the provider's refresh token; ``logout`` ends one and names the provider's
end-session URL. Every outcome is audited like a local login (``auth.login``,
``auth.refresh``, ``auth.logout``, with ``"method": "oidc"``).

Errors carry messages fit to show on the sign-in page: ``InvalidRequest`` for a missing,
unknown, expired or replayed state or a missing code, ``AuthenticationFailed`` for an error
from the provider or a refused code or ID token, ``PermissionDenied`` when the account has
no IRMSIA role, ``ExternalServiceError`` (``ServiceTimeout``) when the provider cannot be
reached. None repeats a code, a token or the provider's free-text error description.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from irmsia.clock import Clock
from irmsia.errors import (
    AuthenticationFailed,
    ConfigError,
    ExternalServiceError,
    InvalidRequest,
    IrmsiaError,
    PermissionDenied,
)
from irmsia.security.oidc import OIDCIdentity, OIDCVerifier, ProviderMetadata
from irmsia.security.oidc_client import (
    TokenEndpoint,
    TokenResponse,
    authorization_url,
    end_session_url,
    error_code,
    new_pkce,
    random_token,
)
from irmsia.security.policy import Principal, Role
from irmsia.usecases.audit import AuditLog, Outcome
from irmsia.usecases.context import RequestContext

METHOD = "oidc"
STATE_PROBLEM = "the sign-in request is unknown, has expired or was already used; please start again"
NO_ROLE = "your account has no IRMSIA role; ask an administrator to grant you one at the identity provider"


@dataclass(frozen=True)
class LoginStart:
    """Where to send the browser, and the value its pre-login cookie must hold until it returns."""

    redirect_url: str = field(repr=False)
    binding: str = field(repr=False)


@dataclass(frozen=True)
class FederatedSession:
    """A portal session's hold on the provider: who, until when, and how to renew it.

    ``expires_at`` is the provider's access-token expiry (the ID token's without one): the
    session ends then unless ``refresh_token`` renews it.
    """

    principal: Principal
    subject: str
    expires_at: datetime
    nonce: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FederatedLogin:
    session: FederatedSession
    next_path: str


@dataclass(frozen=True)
class _Pending:
    nonce: str
    verifier: str
    binding_digest: bytes
    next_path: str
    created: datetime


class PendingLogins:
    """Started sign-ins by state, in memory; each is taken once and expires after ``ttl``.

    Bounded: beyond ``max_pending`` the oldest are dropped, so anonymous floods of sign-in
    starts cannot exhaust memory.
    """

    def __init__(self, clock: Clock, ttl: timedelta, max_pending: int) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_pending
        self._items: OrderedDict[str, _Pending] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, state: str, pending: _Pending) -> None:
        with self._lock:
            self._items[state] = pending
            while len(self._items) > self._max:
                self._items.popitem(last=False)
            while self._items:
                oldest = next(iter(self._items.values()))
                if self._clock() - oldest.created <= self._ttl:
                    break
                self._items.popitem(last=False)

    def take(self, state: str) -> _Pending | None:
        """The pending sign-in for ``state``, removed; None when unknown, taken or expired."""
        with self._lock:
            pending = self._items.pop(state, None)
        if pending is None or self._clock() - pending.created > self._ttl:
            return None
        return pending


@dataclass
class OIDCLogin:
    """The portal's OpenID Connect sign-in for one provider and one client (see the module docstring)."""

    verifier: OIDCVerifier
    tokens: TokenEndpoint
    audit: AuditLog
    clock: Clock
    scopes: str
    provider_name: str
    post_logout_redirect_uri: str
    pending_ttl: timedelta = timedelta(minutes=10)
    max_pending: int = 10_000
    pending: PendingLogins = field(init=False)

    def __post_init__(self) -> None:
        self.pending = PendingLogins(self.clock, self.pending_ttl, self.max_pending)

    # --- sign in ---------------------------------------------------------------------
    def begin(self, ctx: RequestContext, next_path: str) -> LoginStart:
        """Start a sign-in that returns to ``next_path`` (already checked to be a portal path).

        Raises ``ExternalServiceError`` when the provider's discovery document cannot be
        fetched or offers no authorization endpoint or no S256 PKCE.
        """
        metadata = self._metadata()
        if metadata.authorization_endpoint is None or metadata.token_endpoint is None:
            raise ExternalServiceError("the identity provider announces no authorization or token endpoint")
        if metadata.code_challenge_methods is not None and "S256" not in metadata.code_challenge_methods:
            raise ExternalServiceError("the identity provider does not support PKCE with S256")
        state, nonce, binding, pkce = random_token(), random_token(), random_token(), new_pkce()
        self.pending.put(
            state,
            _Pending(
                nonce=nonce,
                verifier=pkce.verifier,
                binding_digest=_digest(binding),
                next_path=next_path,
                created=self.clock(),
            ),
        )
        url = authorization_url(
            metadata.authorization_endpoint,
            client_id=self.tokens.client_id,
            redirect_uri=self.tokens.redirect_uri,
            scopes=self.scopes,
            state=state,
            nonce=nonce,
            pkce=pkce,
        )
        return LoginStart(redirect_url=url, binding=binding)

    def complete(
        self,
        ctx: RequestContext,
        *,
        binding: str | None,
        state: str | None,
        code: str | None,
        error: str | None = None,
        issuer: str | None = None,
    ) -> FederatedLogin:
        """Finish a sign-in from the provider's redirect (its query parameters, and the cookie).

        Raises as the module docstring says; every refusal is audited as a failed login.
        """
        pending = self.pending.take(state) if state else None
        if pending is not None and not (
            binding and hmac.compare_digest(_digest(binding), pending.binding_digest)
        ):
            # A state from another browser: a login-CSRF attempt, or a cookie that expired.
            raise self._refused(ctx, "browser_mismatch", InvalidRequest(STATE_PROBLEM))
        if error is not None:
            code_name = error_code(error)
            raise self._refused(
                ctx,
                "idp_error",
                AuthenticationFailed(f"the identity provider did not sign you in ({code_name})"),
                idp_error=code_name,
            )
        if pending is None:
            raise self._refused(ctx, "bad_state", InvalidRequest(STATE_PROBLEM))
        if issuer is not None and issuer != self.verifier.issuer:
            # RFC 9207: the answer names another provider (a mix-up attack).
            raise self._refused(
                ctx, "issuer_mismatch", AuthenticationFailed("the answer came from another issuer")
            )
        if not code:
            raise self._refused(
                ctx, "no_code", InvalidRequest("the identity provider sent no authorization code")
            )
        try:
            metadata = self._metadata()
            if metadata.token_endpoint is None:  # checked by begin, but discovery may have been renewed
                raise ExternalServiceError("the identity provider announces no token endpoint")
            response = self.tokens.exchange_code(
                metadata.token_endpoint, code=code, verifier=pending.verifier
            )
        except AuthenticationFailed as exc:
            raise self._refused(ctx, "code_refused", exc) from None
        except ExternalServiceError as exc:
            raise self._refused(ctx, "idp_unavailable", exc) from exc
        assert response.id_token is not None  # exchange_code requires one
        try:
            identity = self.verifier.verify_id_token(
                response.id_token, client_id=self.tokens.client_id, nonce=pending.nonce
            )
        except AuthenticationFailed as exc:
            raise self._refused(
                ctx,
                "invalid_id_token",
                AuthenticationFailed(f"the identity provider's ID token was refused ({exc.detail})"),
            ) from None
        except (ExternalServiceError, ConfigError) as exc:
            raise self._refused(ctx, "idp_unavailable", _as_external(exc)) from None
        try:
            session = self._session(identity, response, nonce=pending.nonce, refresh_token=None)
        except PermissionDenied as exc:
            raise self._refused(
                ctx, "no_role", exc, outcome=Outcome.DENIED, resource_id=f"oidc:{identity.subject}"
            ) from None
        except ExternalServiceError as exc:
            raise self._refused(ctx, "idp_unavailable", exc) from None
        self.audit.record_now(
            _as(ctx, session.principal),
            "auth.login",
            resource_type="user",
            resource_id=session.principal.id,
            detail={"method": METHOD},
        )
        return FederatedLogin(session=session, next_path=pending.next_path)

    # --- renew and sign out -----------------------------------------------------------
    def refresh(self, ctx: RequestContext, current: FederatedSession) -> FederatedSession:
        """Renew a session with the provider's refresh token (roles are read again).

        Raises ``AuthenticationFailed`` when there is no refresh token or the provider
        refuses it, ``PermissionDenied`` when the account lost every IRMSIA role,
        ``ExternalServiceError`` when the provider cannot be reached. Audited.
        """
        who = _as(ctx, current.principal)
        if current.refresh_token is None:
            raise AuthenticationFailed("the sign-in has expired")
        try:
            metadata = self._metadata()
            if metadata.token_endpoint is None:
                raise ExternalServiceError("the identity provider announces no token endpoint")
            response = self.tokens.refresh(metadata.token_endpoint, refresh_token=current.refresh_token)
            identity: OIDCIdentity | None = None
            if response.id_token is not None:
                identity = self.verifier.verify_id_token(
                    response.id_token,
                    client_id=self.tokens.client_id,
                    nonce=current.nonce,
                    nonce_required=False,
                )
                if identity.subject != current.subject:
                    raise AuthenticationFailed("the refreshed ID token names another subject")
            if identity is None:
                roles = self._access_token_roles(response.access_token, current.subject)
                renewed = self._renewed(current, response, roles or current.principal.roles)
            else:
                renewed = self._session(
                    identity, response, nonce=current.nonce, refresh_token=current.refresh_token
                )
        except ConfigError as exc:
            raise self._refused(who, "idp_unavailable", _as_external(exc), action="auth.refresh") from None
        except PermissionDenied as exc:
            raise self._refused(who, "no_role", exc, action="auth.refresh", outcome=Outcome.DENIED) from None
        except AuthenticationFailed as exc:
            raise self._refused(who, "refused", exc, action="auth.refresh") from None
        except ExternalServiceError as exc:
            raise self._refused(who, "idp_unavailable", exc, action="auth.refresh") from None
        self.audit.record_now(
            _as(ctx, renewed.principal),
            "auth.refresh",
            resource_type="user",
            resource_id=renewed.principal.id,
            detail={"method": METHOD},
        )
        return renewed

    def logout(self, ctx: RequestContext, current: FederatedSession) -> str | None:
        """Record the sign-out; return the provider's end-session URL, if it announces one."""
        principal = current.principal
        self.audit.record_now(
            _as(ctx, principal),
            "auth.logout",
            resource_type="user",
            resource_id=principal.id,
            detail={"method": METHOD},
        )
        try:
            endpoint = self._metadata().end_session_endpoint
        except ExternalServiceError:
            return None  # signed out here; the provider's own session cannot be ended now
        if endpoint is None:
            return None
        return end_session_url(
            endpoint, client_id=self.tokens.client_id, post_logout_redirect_uri=self.post_logout_redirect_uri
        )

    # --- helpers ----------------------------------------------------------------------
    def _metadata(self) -> ProviderMetadata:
        try:
            return self.verifier.metadata()
        except ConfigError as exc:
            raise _as_external(exc) from None

    def _session(
        self, identity: OIDCIdentity, response: TokenResponse, *, nonce: str, refresh_token: str | None
    ) -> FederatedSession:
        """The session for a verified identity; ``PermissionDenied`` when it has no IRMSIA role."""
        roles = identity.roles or self._access_token_roles(response.access_token, identity.subject)
        if not roles:
            raise PermissionDenied(NO_ROLE)
        principal = Principal(
            id=f"oidc:{identity.subject}",
            username=identity.username,
            roles=frozenset(Role(role) for role in roles),
            method=METHOD,
        )
        return FederatedSession(
            principal=principal,
            subject=identity.subject,
            expires_at=self._expiry(response, identity.expires_at),
            nonce=nonce,
            refresh_token=response.refresh_token or refresh_token,
        )

    def _renewed(
        self, current: FederatedSession, response: TokenResponse, roles: frozenset[str] | frozenset[Role]
    ) -> FederatedSession:
        principal = Principal(
            id=current.principal.id,
            username=current.principal.username,
            roles=frozenset(Role(role) for role in roles),
            method=METHOD,
        )
        return FederatedSession(
            principal=principal,
            subject=current.subject,
            expires_at=self._expiry(response, current.expires_at),
            nonce=current.nonce,
            refresh_token=response.refresh_token or current.refresh_token,
        )

    def _expiry(self, response: TokenResponse, fallback: datetime) -> datetime:
        if response.expires_in is not None and response.expires_in > 0:
            return self.clock() + timedelta(seconds=response.expires_in)
        return fallback

    def _access_token_roles(self, access_token: str | None, subject: str) -> frozenset[str]:
        """Roles from the access token when it is a token we can verify for the same subject.

        Keycloak puts realm roles in the access token only; Entra ID access tokens for
        Microsoft Graph cannot be verified by anyone but Graph, and give nothing here.
        """
        if access_token is None or access_token.count(".") != 2:
            return frozenset()
        try:
            identity = self.verifier.verify(access_token)
        except AuthenticationFailed:
            return frozenset()
        return identity.roles if identity.subject == subject else frozenset()

    def _refused(
        self,
        ctx: RequestContext,
        reason: str,
        exc: IrmsiaError,
        *,
        action: str = "auth.login",
        outcome: Outcome = Outcome.FAILURE,
        resource_id: str | None = None,
        idp_error: str | None = None,
    ) -> IrmsiaError:
        """Audit a refused sign-in (or refresh) and hand back the error to raise."""
        detail = {"method": METHOD, "reason": reason}
        if idp_error is not None:
            detail["idp_error"] = idp_error
        self.audit.record_now(
            ctx,
            action,
            outcome=outcome,
            resource_type="user" if resource_id or ctx.principal else None,
            resource_id=resource_id or (ctx.principal.id if ctx.principal else None),
            detail=detail,
        )
        return exc


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _as(ctx: RequestContext, principal: Principal) -> RequestContext:
    return RequestContext(principal=principal, client_ip=ctx.client_ip, request_id=ctx.request_id)


def _as_external(exc: IrmsiaError) -> ExternalServiceError:
    if isinstance(exc, ExternalServiceError):
        return exc
    # A discovery document naming another issuer: the operator's problem, shown as the provider's.
    return ExternalServiceError("the identity provider's discovery document names another issuer")
