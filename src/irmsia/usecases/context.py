"""Who asks and from where: passed by every front door to every use case."""

from __future__ import annotations

from dataclasses import dataclass

from irmsia.security.policy import Principal


@dataclass(frozen=True)
class RequestContext:
    """The caller, its client address and the request id, for authorisation and audit."""

    principal: Principal | None
    client_ip: str | None = None
    request_id: str | None = None

    @property
    def actor_id(self) -> str | None:
        return self.principal.id if self.principal else None
