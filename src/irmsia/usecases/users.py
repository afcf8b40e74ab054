"""Create, list, disable and re-role accounts; change and reset passwords."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.db import accounts
from irmsia.db.engine import transaction
from irmsia.db.models import User
from irmsia.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound
from irmsia.security.passwords import Passwords, generate_password
from irmsia.security.policy import Permission, Role, authorize
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.context import RequestContext

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            "username must be 2-64 characters: letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return name


def parse_role(role: str) -> Role:
    try:
        return Role(role.strip().lower())
    except ValueError:
        raise InvalidRequest(f"role must be one of {', '.join(r.value for r in Role)}") from None


@dataclass(frozen=True)
class CreatedUser:
    user: User
    one_time_password: str | None  # set when the password was generated


@dataclass
class Accounts:
    sessions: sessionmaker[Session]
    clock: Clock
    passwords: Passwords
    audit: AuditLog

    def create(
        self,
        ctx: RequestContext,
        username: str,
        role: str,
        password: str | None = None,
        *,
        must_change_password: bool | None = None,
    ) -> CreatedUser:
        """Create a local account; without ``password`` a one-time password is generated."""
        authorize(ctx.principal, Permission.MANAGE_USERS)
        name, parsed_role = normalise_username(username), parse_role(role)
        generated = generate_password() if password is None else None
        password_hash = self.passwords.hash(password if password is not None else generated or "")
        now = self.clock()
        with transaction(self.sessions) as session:
            if accounts.user_by_name(session, name) is not None:
                raise Conflict("a user with that username already exists")
            user = User(
                username=name,
                password_hash=password_hash,
                role=parsed_role.value,
                disabled=False,
                must_change_password=generated is not None
                if must_change_password is None
                else must_change_password,
                created_at=now,
                updated_at=now,
            )
            session.add(user)
            session.flush()
            self.audit.record(
                session,
                ctx,
                "user.create",
                resource_type="user",
                resource_id=user.id,
                detail={"role": user.role},
            )
        return CreatedUser(user=user, one_time_password=generated)

    def bootstrap_admin(self, ctx: RequestContext) -> CreatedUser | None:
        """First run: create ``admin`` with a one-time password when no account exists."""
        with self.sessions() as session:
            if accounts.count_users(session) > 0:
                return None
        return self.create(ctx, "admin", Role.ADMIN.value)

    def list(self, ctx: RequestContext, *, offset: int = 0, limit: int = 100) -> Sequence[User]:
        authorize(ctx.principal, Permission.MANAGE_USERS)
        with transaction(self.sessions) as session:
            users = accounts.list_users(session, offset=offset, limit=limit)
            self.audit.record(
                session, ctx, "user.list", resource_type="user", detail={"returned": len(users)}
            )
            return users

    def get(self, ctx: RequestContext, user_id: str) -> User:
        """One account (admins only; audited as ``user.read``). Raises ``NotFound``."""
        authorize(ctx.principal, Permission.MANAGE_USERS)
        with transaction(self.sessions) as session:
            user = self._load(session, user_id)
            self.audit.record(session, ctx, "user.read", resource_type="user", resource_id=user.id)
            return user

    def set_disabled(self, ctx: RequestContext, user_id: str, disabled: bool) -> User:
        """Disable (or re-enable) an account; disabling revokes its refresh tokens."""
        authorize(ctx.principal, Permission.MANAGE_USERS)
        now = self.clock()
        with transaction(self.sessions) as session:
            user = self._load(session, user_id)
            if disabled and user.role == Role.ADMIN.value and not user.disabled:
                self._keep_one_admin(session)
            user.disabled, user.updated_at = disabled, now
            if disabled:
                accounts.revoke_user_tokens(session, user.id, now)
            action = "user.disable" if disabled else "user.enable"
            self.audit.record(session, ctx, action, resource_type="user", resource_id=user.id)
            return user

    def set_role(self, ctx: RequestContext, user_id: str, role: str) -> User:
        authorize(ctx.principal, Permission.MANAGE_USERS)
        parsed = parse_role(role)
        with transaction(self.sessions) as session:
            user = self._load(session, user_id)
            if user.role == Role.ADMIN.value and parsed is not Role.ADMIN and not user.disabled:
                self._keep_one_admin(session)
            previous, user.role, user.updated_at = user.role, parsed.value, self.clock()
            self.audit.record(
                session,
                ctx,
                "user.set_role",
                resource_type="user",
                resource_id=user.id,
                detail={"from": previous, "to": parsed.value},
            )
            return user

    def reset_password(self, ctx: RequestContext, user_id: str) -> str:
        """Give an account a one-time password that must be changed at next login."""
        authorize(ctx.principal, Permission.MANAGE_USERS)
        password = generate_password()
        now = self.clock()
        with transaction(self.sessions) as session:
            user = self._load(session, user_id)
            user.password_hash = self.passwords.hash(password)
            user.must_change_password, user.updated_at = True, now
            accounts.revoke_user_tokens(session, user.id, now)
            self.audit.record(session, ctx, "user.reset_password", resource_type="user", resource_id=user.id)
        return password

    def change_own_password(self, ctx: RequestContext, current: str, new: str) -> None:
        """The caller changes its own password (clears a pending forced change)."""
        principal = ctx.principal
        if principal is None or principal.method != "password":
            raise AuthenticationFailed("only local accounts have a password here")
        if current == new:
            raise InvalidRequest("the new password must differ from the current one")
        new_hash = self.passwords.hash(new)
        with transaction(self.sessions) as session:
            user = self._load(session, principal.id)
            if not self.passwords.verify(user.password_hash, current):
                raise AuthenticationFailed("current password is incorrect")
            user.password_hash, user.must_change_password, user.updated_at = new_hash, False, self.clock()
            self.audit.record(session, ctx, "user.change_password", resource_type="user", resource_id=user.id)

    def by_username(self, username: str) -> User:
        """Look up an account by name (for the CLI, which acts as the system)."""
        with self.sessions() as session:
            user = accounts.user_by_name(session, username)
            if user is None:
                raise NotFound("no such user")
            return user

    @staticmethod
    def _load(session: Session, user_id: str) -> User:
        user = accounts.user_by_id(session, user_id)
        if user is None:
            raise NotFound("no such user")
        return user

    @staticmethod
    def _keep_one_admin(session: Session) -> None:
        if accounts.count_users(session, role=Role.ADMIN.value, active_only=True) <= 1:
            raise Conflict("this is the last active admin; create another admin first")
