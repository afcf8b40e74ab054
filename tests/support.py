"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

from irmsia.cli.main import CLI_CTX

__all__ = ["CLI_CTX"]
