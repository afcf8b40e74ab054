"""Roles, permissions and the one place where access is decided.

Every front door (REST, portal, CLI acting for a user) asks ``authorize`` before calling a
use case; route handlers never compare roles themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from irmsia.errors import AuthenticationFailed, PermissionDenied


class Role(StrEnum):
    ADMIN = "admin"
    RADIOLOGIST = "radiologist"
    CLINICIAN = "clinician"
    UPLOADER = "uploader"
    AUDITOR = "auditor"


class Permission(StrEnum):
    UPLOAD_IMAGES = "images:upload"
    READ_IMAGES = "images:read"  # metadata, pixels, renders of de-identified images
    DELETE_IMAGES = "images:delete"
    READ_JOBS = "jobs:read"
    MANAGE_JOBS = "jobs:manage"
    ANALYZE = "ai:analyze"
    READ_RESULTS = "ai:read"
    SIGN_REPORTS = "reports:sign"
    REIDENTIFY = "vault:read"  # the re-identification vault
    QUARANTINE = "quarantine:manage"
    MANAGE_USERS = "users:manage"
    MANAGE_KEYS = "keys:manage"
    READ_AUDIT = "audit:read"
    READ_LEDGER = "ledger:read"
    VERIFY_LEDGER = "ledger:verify"
    ANCHOR_LEDGER = "ledger:anchor"  # publish a checkpoint to external ledgers now
    READ_SYSTEM = "system:read"  # dashboards: storage, key and job status, metrics


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.RADIOLOGIST: frozenset(
        {
            Permission.UPLOAD_IMAGES,
            Permission.READ_IMAGES,
            Permission.READ_JOBS,
            Permission.ANALYZE,
            Permission.READ_RESULTS,
            Permission.SIGN_REPORTS,
        }
    ),
    Role.CLINICIAN: frozenset({Permission.READ_IMAGES, Permission.READ_RESULTS, Permission.ANALYZE}),
    Role.UPLOADER: frozenset({Permission.UPLOAD_IMAGES, Permission.READ_JOBS}),
    Role.AUDITOR: frozenset(
        {Permission.READ_AUDIT, Permission.READ_LEDGER, Permission.VERIFY_LEDGER, Permission.READ_SYSTEM}
    ),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a local account or an OIDC identity."""

    id: str
    username: str
    roles: frozenset[Role]
    method: str = "password"  # password | oidc | cli | system
    password_change_required: bool = False
    permissions: frozenset[Permission] = field(init=False)

    def __post_init__(self) -> None:
        granted: set[Permission] = set()
        for role in self.roles:
            granted |= ROLE_PERMISSIONS[role]
        object.__setattr__(self, "permissions", frozenset(granted))

    @property
    def primary_role(self) -> str:
        """The most privileged role, for audit records."""
        order = list(Role)
        return min(self.roles, key=order.index).value if self.roles else ""

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


SYSTEM = Principal(id="system", username="system", roles=frozenset({Role.ADMIN}), method="system")


def authorize(principal: Principal | None, permission: Permission) -> Principal:
    """Return the principal if it holds ``permission``; raise otherwise.

    Raises ``AuthenticationFailed`` for anonymous callers and ``PermissionDenied`` for
    authenticated callers without the permission.
    """
    if principal is None:
        raise AuthenticationFailed("authentication required")
    if principal.password_change_required:
        raise PermissionDenied("password change required before anything else")
    if not principal.can(permission):
        raise PermissionDenied(f"role {principal.primary_role or 'none'} may not {permission.value}")
    return principal
