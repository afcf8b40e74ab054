"""Log in, refresh, log out, and turn a bearer token into a ``Principal``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.db import accounts
from irmsia.db.base import new_id
from irmsia.db.engine import engine_of, transaction
from irmsia.db.models import LoginThrottle, RefreshToken, User
from irmsia.errors import AuthenticationFailed, TooManyAttempts
from irmsia.security.passwords import Passwords
from irmsia.security.policy import Principal, Role
from irmsia.security.tokens import AccessTokens, new_refresh_secret, refresh_digest
from irmsia.usecases.audit import AuditLog, Outcome
from irmsia.usecases.context import RequestContext

if TYPE_CHECKING:
    from irmsia.security.oidc import OIDCVerifier

LOGIN_FAILED = "incorrect username or password"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105  (the OAuth2 token type, not a secret)


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: timedelta


@dataclass
class Authenticator:
    """Password logins with throttling, refresh-token rotation and bearer-token checks."""

    sessions: sessionmaker[Session]
    clock: Clock
    passwords: Passwords
    access_tokens: AccessTokens
    refresh_ttl: timedelta
    throttle: ThrottlePolicy
    audit: AuditLog
    oidc: OIDCVerifier | None = None

    # --- login -------------------------------------------------------------------
    def login(self, ctx: RequestContext, username: str, password: str) -> TokenPair:
        """Check a password and issue tokens.

        Raises ``TooManyAttempts`` while the account or the client address is throttled and
        ``AuthenticationFailed`` for a wrong password, an unknown or a disabled user (the same
        message and the same argon2 work in each case).
        """
        now = self.clock()
        name = username.strip().lower()
        keys = [_throttle_key("account", name), _throttle_key("client", ctx.client_ip or "unknown")]
        with transaction(self.sessions) as session:
            locked = [
                row for key in keys if (row := accounts.throttle(session, key)) and _is_locked(row, now)
            ]
            if locked:
                retry = max(
                    int((row.locked_until - now).total_seconds()) for row in locked if row.locked_until
                )
                self.audit.record(
                    session, ctx, "auth.login", outcome=Outcome.DENIED, detail={"reason": "throttled"}
                )
                error: Exception = TooManyAttempts(
                    "too many failed logins; try again later", retry_after=max(retry, 1)
                )
            else:
                user = accounts.user_by_name(session, name)
                valid = self.passwords.verify(user.password_hash if user else None, password)
                if user is None or not valid or user.disabled:
                    for key in keys:
                        self._count_failure(session, key, now)
                    self.audit.record(
                        session,
                        ctx,
                        "auth.login",
                        outcome=Outcome.FAILURE,
                        resource_type="user",
                        resource_id=user.id if user else None,
                        detail={"reason": "disabled" if user and valid else "bad_credentials"},
                    )
                    error = AuthenticationFailed(LOGIN_FAILED)
                else:
                    if session.get(LoginThrottle, keys[0]) is not None:
                        session.delete(session.get(LoginThrottle, keys[0]))
                    if user.password_hash and self.passwords.needs_rehash(user.password_hash):
                        user.password_hash = self.passwords.hash(password)
                    user.last_login_at = now
                    pair = self._issue(session, user, family_id=new_id(), now=now)
                    self.audit.record(
                        session,
                        _as(ctx, user),
                        "auth.login",
                        resource_type="user",
                        resource_id=user.id,
                    )
                    return pair
        raise error

    def _count_failure(self, session: Session, key: str, now: datetime) -> None:
        row = accounts.throttle(session, key)
        if row is None or now - row.window_start > self.throttle.window:
            if row is None:
                row = LoginThrottle(key=key, failures=0, window_start=now)
                session.add(row)
            row.failures, row.window_start, row.locked_until = 0, now, None
        row.failures += 1
        if row.failures >= self.throttle.max_failures:
            row.locked_until = now + self.throttle.window

    # --- refresh / logout ----------------------------------------------------------
    def refresh(self, ctx: RequestContext, refresh_token: str) -> TokenPair:
        """Rotate a refresh token. Reuse of a spent token revokes its whole family."""
        now = self.clock()
        with transaction(self.sessions) as session:
            row = accounts.refresh_by_digest(session, refresh_digest(refresh_token))
            reason = _refresh_problem(row, now)
            if row is not None and reason == "reused":
                # A spent token came back: someone holds a copy. Revoke the family.
                accounts.revoke_family(session, row.family_id, now)
            if reason is None and row is not None:
                row.used_at = now
                pair = self._issue(session, row.user, family_id=row.family_id, now=now)
                self.audit.record(
                    session, _as(ctx, row.user), "auth.refresh", resource_type="user", resource_id=row.user_id
                )
                return pair
            self.audit.record(
                session,
                ctx,
                "auth.refresh",
                outcome=Outcome.FAILURE,
                resource_type="user",
                resource_id=row.user_id if row else None,
                detail={"reason": reason},
            )
        raise AuthenticationFailed("refresh token is invalid, expired or already used")

    def logout(self, ctx: RequestContext, refresh_token: str | None) -> None:
        """Revoke the given refresh token's family, or every refresh token of the caller."""
        now = self.clock()
        principal = ctx.principal
        if principal is None:
            raise AuthenticationFailed("authentication required")
        with transaction(self.sessions) as session:
            row = (
                accounts.refresh_by_digest(session, refresh_digest(refresh_token)) if refresh_token else None
            )
            if row is not None and row.user_id == principal.id:
                accounts.revoke_family(session, row.family_id, now)
            else:
                accounts.revoke_user_tokens(session, principal.id, now)
            self.audit.record(session, ctx, "auth.logout", resource_type="user", resource_id=principal.id)

    def _issue(self, session: Session, user: User, *, family_id: str, now: datetime) -> TokenPair:
        secret = new_refresh_secret()
        session.add(
            RefreshToken(
                user_id=user.id,
                family_id=family_id,
                token_hash=refresh_digest(secret),
                issued_at=now,
                expires_at=now + self.refresh_ttl,
            )
        )
        access = self.access_tokens.issue(user_id=user.id, username=user.username, role=user.role, now=now)
        return TokenPair(access_token=access, refresh_token=secret, expires_in=self.access_tokens.ttl_seconds)

    # --- bearer tokens -------------------------------------------------------------
    def principal_for(self, token: str) -> Principal:
        """Resolve a bearer token (ours, or the configured OIDC provider's) to a principal.

        The account is re-read on every request, so disabling a user or changing a role
        takes effect at once. Raises ``AuthenticationFailed``.
        """
        if self.oidc is not None and not self.access_tokens.looks_local(token):
            identity = self.oidc.verify(token)
            roles = frozenset(Role(role) for role in identity.roles)
            if not roles:
                raise AuthenticationFailed("token carries no IRMSIA role")
            return Principal(
                id=f"oidc:{identity.subject}", username=identity.username, roles=roles, method="oidc"
            )
        claims = self.access_tokens.verify(token, now=self.clock())
        with engine_of(self.sessions).connect() as connection:
            account = accounts.account_state(connection, claims.user_id)
        if account is None or account.disabled:
            raise AuthenticationFailed("account is disabled or no longer exists")
        return local_principal(account.id, account.username, account.role, bool(account.must_change_password))


def principal_of(user: User) -> Principal:
    """The principal of a local account; a pending password change limits it to that."""
    return local_principal(user.id, user.username, user.role, user.must_change_password)


def local_principal(user_id: str, username: str, role: str, must_change_password: bool) -> Principal:
    """The principal of the local account with these fields (see ``principal_of``)."""
    return Principal(
        id=user_id,
        username=username,
        roles=frozenset({Role(role)}),
        method="password",
        password_change_required=must_change_password,
    )


def _as(ctx: RequestContext, user: User) -> RequestContext:
    return RequestContext(principal=principal_of(user), client_ip=ctx.client_ip, request_id=ctx.request_id)


def _refresh_problem(row: RefreshToken | None, now: datetime) -> str | None:
    if row is None:
        return "unknown"
    if row.used_at is not None or row.revoked_at is not None:
        return "reused" if row.used_at is not None else "revoked"
    if row.expires_at <= now:
        return "expired"
    if row.user.disabled:
        return "disabled"
    return None


def _throttle_key(kind: str, value: str) -> str:
    # Hashed, so the table never holds typed usernames (sometimes passwords) or addresses.
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


def _is_locked(row: LoginThrottle, now: datetime) -> bool:
    return row.locked_until is not None and row.locked_until > now
