"""The one lazy plugin loader behind every registry (storage, keys, anchors, AI providers).

A registry maps a kind to ``"module:Class"``; the module is imported only when that kind is
asked for, so a missing optional library never breaks ``import irmsia`` and the user gets a
message naming what to install (like pydicom's pixel-decoder plugins).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from irmsia.errors import ConfigError, IrmsiaError


def load_plugin(
    registry: Mapping[str, str],
    kind: str,
    family: str,
    *,
    missing: Callable[[ImportError], IrmsiaError] | None = None,
) -> Any:
    """The class registered for ``kind``.

    Raises ``ConfigError`` for an unknown kind (naming the choices) and, when its module cannot
    be imported, ``missing(exc)`` or a ``ConfigError`` naming the missing library.
    """
    target = registry.get(kind)
    if target is None:
        raise ConfigError(f"unknown {family} {kind!r}; choose one of {', '.join(sorted(registry))}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if missing is not None:
            raise missing(exc) from exc
        raise ConfigError(
            f"{family} {kind!r} is not installed ({exc.name or 'a dependency'} missing)"
        ) from exc
    return getattr(module, class_name)
