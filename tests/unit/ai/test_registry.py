"""The lazy provider registry: nothing heavy at import, clear errors for what is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import irmsia.ai
from irmsia.ai import PROVIDERS, create_provider
from irmsia.ai.builtin import BuiltinQCProvider
from irmsia.ai.optional import import_optional
from irmsia.errors import ConfigError, ProviderUnavailable

HEAVY = ("torch", "onnxruntime", "onnx", "transformers", "torchxrayvision", "torchvision")


def test_importing_irmsia_and_every_provider_module_loads_no_optional_library() -> None:
    modules = sorted({target.partition(":")[0] for target in PROVIDERS.values()})
    code = (
        "import sys, irmsia, irmsia.ai, irmsia.ai.runner, irmsia.ai.factory\n"
        f"for name in {modules!r}: __import__(name)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )

    assert out.stdout.strip() == ""


def test_create_provider_builds_by_name() -> None:
    assert isinstance(create_provider("builtin"), BuiltinQCProvider)
    assert create_provider("mock").simulated is True


def test_an_unknown_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        create_provider("chain")


def test_a_missing_optional_library_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import of it now raises ImportError

    with pytest.raises(ProviderUnavailable) as raised:
        create_provider("onnx", card_path=Path("card.json"))
    assert raised.value.detail == "install irmsia[ai] for the onnx provider"


def test_a_missing_torch_names_the_torch_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)

    with pytest.raises(ProviderUnavailable) as raised:
        create_provider("torchxrayvision", weights_path=Path("w.pt"))
    assert raised.value.detail == "install irmsia[ai-torch] for the torchxrayvision provider"
    with pytest.raises(ProviderUnavailable) as raised:
        create_provider("huggingface", model_dir=Path("m"))
    assert "irmsia[ai-torch]" in raised.value.detail


def test_a_provider_module_that_fails_to_import_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROVIDERS, "onnx", "irmsia.ai.no_such_module:Nothing")

    with pytest.raises(ProviderUnavailable) as raised:
        create_provider("onnx")
    assert "irmsia[ai]" in raised.value.detail


def test_import_optional_returns_the_module_when_present() -> None:
    assert import_optional("json", provider="x", extra="ai").__name__ == "json"


def test_the_package_exports_the_interface() -> None:
    for name in ("Provider", "InputSpec", "AnalysisResult", "create_provider", "DISCLAIMER"):
        assert hasattr(irmsia.ai, name)
