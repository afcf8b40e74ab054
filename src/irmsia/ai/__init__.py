"""AI analysis: one provider interface, a lazy registry of providers and one runner.

Providers are named by import path and imported only when ``create_provider`` asks for them, so
an optional library that is not installed (onnxruntime, torch, transformers) never breaks
``import irmsia``; asking for such a provider raises ``ProviderUnavailable`` saying which extra
to install ("install irmsia[ai] for the onnx provider").

    provider = create_provider("builtin")
    provider = create_provider("onnx", card_path=Path("models/chest/card.yaml"), threads=2)

``irmsia.ai.runner.AnalysisRunner`` runs them (timeouts, retries, validation, labelling,
provenance); ``irmsia.ai.factory.build_runner`` builds one from plain configuration values.
"""

from __future__ import annotations

from typing import Any

from irmsia.ai.base import (
    ImageInput,
    ImageMeta,
    InputSpec,
    ModelInfo,
    PreparedImage,
    Provider,
    ProviderOutput,
    ReportWriter,
)
from irmsia.ai.schema import DISCLAIMER, AnalysisResult, Finding, Provenance, ResultError, Severity
from irmsia.errors import ProviderUnavailable
from irmsia.plugins import load_plugin

PROVIDERS: dict[str, str] = {
    "mock": "irmsia.ai.mock:MockProvider",
    "builtin": "irmsia.ai.builtin:BuiltinQCProvider",
    "onnx": "irmsia.ai.onnxmodel:OnnxProvider",
    "torchxrayvision": "irmsia.ai.xrv:TorchXRayVisionProvider",
    "huggingface": "irmsia.ai.huggingface:HuggingFaceProvider",
    "openai": "irmsia.ai.openai_compat:OpenAICompatibleProvider",
}
"""Provider name → ``module:Class``. Constant on purpose: no global registration."""

EXTRAS: dict[str, str] = {"onnx": "ai", "torchxrayvision": "ai-torch", "huggingface": "ai-torch"}
"""Provider name → the pip extra that installs its libraries."""


def create_provider(name: str, **params: Any) -> Provider:
    """Build the ``name`` provider with ``params`` passed to its constructor.

    Raises ``ConfigError`` for an unknown name and ``ProviderUnavailable`` when its library or
    model files are missing.
    """

    def missing(_exc: ImportError) -> ProviderUnavailable:
        return ProviderUnavailable(f"install irmsia[{EXTRAS.get(name, 'ai')}] for the {name} provider")

    provider: Provider = load_plugin(PROVIDERS, name, "AI provider", missing=missing)(**params)
    return provider


__all__ = [
    "DISCLAIMER",
    "EXTRAS",
    "PROVIDERS",
    "AnalysisResult",
    "Finding",
    "ImageInput",
    "ImageMeta",
    "InputSpec",
    "ModelInfo",
    "PreparedImage",
    "Provenance",
    "Provider",
    "ProviderOutput",
    "ReportWriter",
    "ResultError",
    "Severity",
    "create_provider",
]
