"""Import optional libraries for providers, turning absence into ``ProviderUnavailable``.

Provider modules import their heavy libraries (onnxruntime, torch, transformers) only inside
their constructors through ``import_optional``, so ``import irmsia`` and the provider registry
work without them and the user is told which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from irmsia.errors import ProviderUnavailable


def import_optional(module: str, *, provider: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ``ProviderUnavailable("install irmsia[extra] for the provider")``.

    A library that is installed but fails to load (a broken shared library) counts as missing.
    """
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:
        raise ProviderUnavailable(f"install irmsia[{extra}] for the {provider} provider") from exc
