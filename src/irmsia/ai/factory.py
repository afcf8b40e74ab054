"""Build the AI runner from plain configuration values (``bootstrap`` fills ``AIConfig`` from Settings).

Every provider gets a factory; a provider is built only when first used, so a misconfigured or
uninstalled provider costs nothing until it is asked for, and then yields an error-status result
(``provider_unavailable``) saying what is missing. ``AnalysisRunner.preload()`` builds the routed
providers up front for a readiness check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from irmsia.ai import create_provider
from irmsia.ai.base import Provider, ReportWriter
from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool, RetryPolicy
from irmsia.clock import Clock
from irmsia.errors import ConfigError, ProviderUnavailable

REPORT_WRITERS = frozenset({"", "mock", "openai"})


@dataclass(frozen=True)
class AIConfig:
    """Everything the AI layer needs; each field names the setting it comes from."""

    provider: str = "builtin"  # AI_PROVIDER: the default route
    routes: str = ""  # AI_ROUTES: JSON list of {modality, body_part, provider}
    timeout: float = 60.0  # AI_TIMEOUT_SECONDS: one analysis, retries included
    retries: int = 2  # AI_MAX_RETRIES: extra attempts for remote providers
    retry_backoff: float = 0.5  # AI_RETRY_BACKOFF_SECONDS: first delay, doubled each time
    workers: int = 2  # AI_WORKERS: threads running provider calls
    device: str = "cpu"  # AI_DEVICE: cpu or cuda
    weights_dir: Path | None = None  # WEIGHTS_DIR
    onnx_model_card: Path | None = None  # AI_ONNX_MODEL_CARD (relative paths: under WEIGHTS_DIR)
    onnx_threads: int = 0  # AI_ONNX_THREADS (0: ONNX Runtime's default)
    onnx_spinning: bool = True  # AI_ONNX_SPINNING
    xrv_weights: str = "densenet121-res224-all"  # AI_XRV_WEIGHTS: WEIGHTS_DIR/<name>.pt
    torch_threads: int = 0  # AI_TORCH_THREADS (0: torch's default)
    huggingface_model: str = ""  # HUGGINGFACE_MODEL: local directory
    openai_api_key: SecretStr | None = None  # OPENAI_API_KEY
    openai_model: str = "gpt-4o"  # OPENAI_MODEL
    openai_base_url: str = "https://api.openai.com/v1"  # OPENAI_BASE_URL
    report_writer: str = ""  # AI_REPORT_WRITER: "", mock or openai

    def __post_init__(self) -> None:
        if self.report_writer not in REPORT_WRITERS:
            raise ConfigError("AI_REPORT_WRITER must be empty, mock or openai")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError("AI_DEVICE must be cpu or cuda")
        if self.timeout <= 0 or self.retries < 0 or self.retry_backoff < 0 or self.workers < 1:
            raise ConfigError(
                "AI_TIMEOUT_SECONDS, AI_MAX_RETRIES, AI_RETRY_BACKOFF_SECONDS or AI_WORKERS is out of range"
            )

    def weights_path(self, path: Path) -> Path:
        """``path`` as is when absolute, else under WEIGHTS_DIR."""
        if path.is_absolute() or self.weights_dir is None:
            return path
        return self.weights_dir / path


def provider_factories(
    config: AIConfig, http: Callable[[], httpx.Client]
) -> dict[str, Callable[[], Provider]]:
    """One zero-argument factory per provider name; ``http`` supplies the shared HTTP client."""

    def onnx() -> Provider:
        if config.onnx_model_card is None:
            raise ProviderUnavailable("set AI_ONNX_MODEL_CARD to use the onnx provider")
        return create_provider(
            "onnx",
            card_path=config.weights_path(config.onnx_model_card),
            threads=config.onnx_threads,
            spinning=config.onnx_spinning,
            device=config.device,
        )

    def xrv() -> Provider:
        if config.weights_dir is None:
            raise ProviderUnavailable("set WEIGHTS_DIR to use the torchxrayvision provider")
        return create_provider(
            "torchxrayvision",
            weights_path=config.weights_dir / f"{config.xrv_weights}.pt",
            weights_name=config.xrv_weights,
            threads=config.torch_threads,
            device=config.device,
        )

    def huggingface() -> Provider:
        if not config.huggingface_model:
            raise ProviderUnavailable("set HUGGINGFACE_MODEL to a local model directory")
        return create_provider(
            "huggingface",
            model_dir=Path(config.huggingface_model),
            threads=config.torch_threads,
            device=config.device,
        )

    def openai() -> Provider:
        return create_provider(
            "openai",
            http=http(),
            model=config.openai_model,
            base_url=config.openai_base_url,
            api_key=config.openai_api_key,
            timeout=config.timeout,
        )

    return {
        "mock": lambda: create_provider("mock"),
        "builtin": lambda: create_provider("builtin"),
        "onnx": onnx,
        "torchxrayvision": xrv,
        "huggingface": huggingface,
        "openai": openai,
    }


def build_report_writer(config: AIConfig, http: Callable[[], httpx.Client]) -> ReportWriter | None:
    """The report writer named by AI_REPORT_WRITER, or None."""
    if config.report_writer == "openai":
        from irmsia.ai.openai_compat import OpenAIReportWriter

        return OpenAIReportWriter(
            http=http(),
            model=config.openai_model,
            base_url=config.openai_base_url,
            api_key=config.openai_api_key,
            timeout=config.timeout,
        )
    if config.report_writer == "mock":
        from irmsia.ai.mock import MockReportWriter

        return MockReportWriter()
    return None


class _LazyClient:
    """One httpx client, made on first use and closed with the runner."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._client: httpx.Client | None = None

    def __call__(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def build_runner(config: AIConfig, *, clock: Clock, http: httpx.Client | None = None) -> AnalysisRunner:
    """The runner for ``config``. Raises ``ConfigError`` for invalid routes or names.

    ``http`` is used for remote providers when given (the caller closes it); otherwise the runner
    makes one on first need and closes it in ``close()``.
    """
    router = Router.from_json(config.routes, default=config.provider)
    lazy = _LazyClient(config.timeout)
    client: Callable[[], httpx.Client] = (lambda: http) if http is not None else lazy
    closers: list[Callable[[], Any]] = [] if http is not None else [lazy.close]
    return AnalysisRunner(
        ProviderPool(provider_factories(config, client)),
        router,
        clock=clock,
        timeout=config.timeout,
        retry=RetryPolicy(attempts=config.retries + 1, initial_delay=config.retry_backoff),
        report_writer=build_report_writer(config, client),
        workers=config.workers,
        closers=closers,
    )
