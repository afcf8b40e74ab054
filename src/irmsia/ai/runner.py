"""The one place that runs AI providers: pre-process → predict → post-process.

``AnalysisRunner`` does, identically for every provider:

- routing: the router picks the provider for the image's modality and body part, unless the
  caller names one; each provider is built once, on first use (``ProviderPool``);
- pre-processing: the provider's ``InputSpec`` turns the rendered frame into its tensor;
- a deadline: the provider call runs in a worker thread and the runner stops waiting after
  ``timeout`` seconds (the thread itself finishes in the background: Python cannot kill it, so
  remote clients must also carry their own network timeouts; while ``workers`` threads are
  stuck, later calls wait in the queue and time out too, instead of piling up threads);
- retries with exponential backoff, only for ``remote`` providers and only for
  ``ExternalServiceError`` (a ``retry_after`` attribute on the error, e.g. from HTTP 429, is
  honoured), all within the one deadline;
- validation of the output into ``AnalysisResult``, the AI-generated label and disclaimer,
  provenance (provider, model, version, weights SHA-256) and ``processing_time``;
- optionally a report writer (an LLM) that turns the vision findings into ``report_text``.

What the caller gets: ``analyze`` raises ``InvalidDicom`` when the object is not an image or its
pixel data cannot be decoded (the caller sent something unusable); every provider problem, from a
missing library to a slow or failing service or invalid output, becomes a result with
``status`` "error" and a PHI-free ``error``. Programming errors still raise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError
from pydicom.dataset import Dataset

from irmsia.ai.base import ImageInput, ImageMeta, Provider, ProviderOutput, ReportWriter
from irmsia.ai.inputs import AnalysisContext, image_input, image_meta, require_image
from irmsia.ai.preprocess import prepare
from irmsia.ai.routing import Router
from irmsia.ai.schema import AnalysisResult, Provenance, ResultError, risk_from_findings
from irmsia.clock import Clock
from irmsia.errors import ExternalServiceError, InputError, IrmsiaError, ProviderUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
ProviderFactory = Callable[[], Provider]


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for remote providers: ``attempts`` in all, delays ``initial_delay * multiplier**n``.

    A server's Retry-After wins over the computed delay; any delay is capped at ``max_delay``.
    """

    attempts: int = 3
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        backoff = self.initial_delay * self.multiplier ** (attempt - 1)
        if retry_after is not None and retry_after >= 0:
            backoff = retry_after
        return min(backoff, self.max_delay)


class ProviderPool:
    """Builds each named provider once, on first use, from its factory (thread-safe).

    A factory that raises ``ProviderUnavailable`` is retried on the next use, so installing a
    model file does not need a restart.
    """

    def __init__(self, factories: Mapping[str, ProviderFactory]) -> None:
        self._factories = dict(factories)
        self._built: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Provider:
        """The provider called ``name``; ``ProviderUnavailable`` if not configured or not loadable."""
        with self._lock:
            provider = self._built.get(name)
            if provider is None:
                factory = self._factories.get(name)
                if factory is None:
                    raise ProviderUnavailable(f"the {name} provider is not configured")
                provider = factory()
                self._built[name] = provider
            return provider

    def close(self) -> None:
        with self._lock:
            for provider in self._built.values():
                provider.close()
            self._built.clear()


class _Failed(Exception):
    """Internal: a provider call ended in a result error (never escapes the runner)."""

    def __init__(self, error: ResultError) -> None:
        super().__init__(error.code)
        self.error = error


def _error(code: str, message: str) -> ResultError:
    return ResultError(code=code, message=message[:500])


def _from_exception(exc: IrmsiaError) -> ResultError:
    # IRMSIA errors carry messages written to be free of patient data (errors.py).
    return _error(exc.code, exc.detail)


class AnalysisRunner:
    """Runs providers for images; see the module docstring for what it guarantees.

    ``timeout`` (seconds) bounds one analysis, retries included; ``workers`` threads run provider
    calls. ``timer`` (monotonic seconds) and ``sleep`` are injectable for tests; ``clock`` stamps
    results.
    """

    def __init__(
        self,
        pool: ProviderPool,
        router: Router,
        *,
        clock: Clock,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        report_writer: ReportWriter | None = None,
        workers: int = 2,
        timer: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        closers: Sequence[Callable[[], Any]] = (),
    ) -> None:
        self._pool = pool
        self._router = router
        self._clock = clock
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._writer = report_writer
        self._timer = timer
        self._sleep = sleep
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="irmsia-ai")
        self._closers = list(closers)

    # --- public API ------------------------------------------------------------------------

    def analyze(
        self, ds: Dataset, context: AnalysisContext | None = None, *, provider: str | None = None
    ) -> AnalysisResult:
        """Analyse one de-identified image object.

        Raises ``InvalidDicom`` for non-image objects or undecodable pixel data; everything that
        goes wrong in the provider is an error-status result.
        """
        return self.analyze_datasets([ds], context, provider=provider)[0]

    def analyze_datasets(
        self,
        datasets: Sequence[Dataset],
        context: AnalysisContext | None = None,
        *,
        provider: str | None = None,
    ) -> list[AnalysisResult]:
        """Analyse several de-identified image objects, in order, each provider's share as one batch.

        Raises ``InvalidDicom`` before anything runs when one of them is not an image, and when
        one's pixel data cannot be decoded; ``context`` applies to every image. Each image is
        rendered after its provider is chosen, with the modality values only if it asks for them.
        """
        for ds in datasets:
            require_image(ds)
        metas = [image_meta(ds, context) for ds in datasets]

        def render(chosen: Provider, indices: Sequence[int]) -> list[ImageInput]:
            needs = chosen.input_spec.needs_modality
            return [image_input(datasets[i], context, with_modality=needs) for i in indices]

        return self._grouped(metas, render, provider)

    def analyze_image(self, image: ImageInput, *, provider: str | None = None) -> AnalysisResult:
        """Analyse an image already rendered (``irmsia.ai.inputs.image_input``)."""
        return self.analyze_batch([image], provider=provider)[0]

    def analyze_batch(
        self, images: Sequence[ImageInput], *, provider: str | None = None
    ) -> list[AnalysisResult]:
        """Analyse several rendered images, in order; each provider gets its images as one batch.

        One deadline covers each provider's batch; ``processing_time`` is the batch's time shared
        equally among its images.
        """
        return self._grouped(
            [image.meta for image in images], lambda _, indices: [images[i] for i in indices], provider
        )

    def provider(self, name: str) -> Provider:
        """The provider called ``name``, built on first use; ``ProviderUnavailable`` when it cannot be."""
        return self._pool.get(name)

    def preload(self, names: Sequence[str] | None = None) -> dict[str, str]:
        """Build ``names`` (default: every provider the router can choose) now.

        Returns name → "ok" or the error code (``provider_unavailable``, ...): for readiness checks.
        """
        status: dict[str, str] = {}
        for name in sorted(names or self._router.providers()):
            try:
                self._pool.get(name)
                status[name] = "ok"
            except IrmsiaError as exc:
                status[name] = exc.code
        return status

    def close(self, *, providers: bool = True) -> None:
        """Stop the worker threads (without waiting for abandoned calls), then close providers and clients.

        ``providers=False`` leaves the providers and clients open (they were shared with another runner).
        """
        self._executor.shutdown(wait=False, cancel_futures=True)
        if providers:
            self._pool.close()
            for closer in self._closers:
                closer()

    # --- steps -----------------------------------------------------------------------------

    def _grouped(
        self,
        metas: Sequence[ImageMeta],
        images_for: Callable[[Provider, Sequence[int]], list[ImageInput]],
        provider: str | None,
    ) -> list[AnalysisResult]:
        """Route each image, then run each provider once on its images (``images_for`` builds them)."""
        groups: dict[str, list[int]] = {}
        for index, meta in enumerate(metas):
            name = provider or self._router.select(meta.modality, meta.body_part)
            groups.setdefault(name, []).append(index)
        results: list[AnalysisResult | None] = [None] * len(metas)
        for name, indices in groups.items():
            start = self._timer()
            try:
                chosen = self._provider(name, metas[indices[0]])
                for i in indices[1:]:
                    self._check_supported(chosen, metas[i])
            except _Failed as failed:
                for i in indices:
                    results[i] = self._error_result(name, None, failed.error, start)
                continue
            batch = images_for(chosen, indices)
            for i, result in zip(indices, self._run(name, chosen, batch, start), strict=True):
                results[i] = result
        return [result for result in results if result is not None]

    def _provider(self, name: str, meta: ImageMeta) -> Provider:
        try:
            provider = self._pool.get(name)
        except IrmsiaError as exc:
            log.warning("AI provider %s is unavailable (%s)", name, exc.code)
            raise _Failed(_from_exception(exc)) from None
        self._check_supported(provider, meta)
        return provider

    @staticmethod
    def _check_supported(provider: Provider, meta: ImageMeta) -> None:
        reason = provider.unsupported_reason(meta)
        if reason is not None:
            raise _Failed(_error("unsupported_input", reason))

    def _run(
        self, name: str, provider: Provider, images: Sequence[ImageInput], start: float
    ) -> list[AnalysisResult]:
        try:
            prepared = [prepare(image, provider.input_spec) for image in images]
        except InputError as exc:
            return [self._error_result(name, provider, _from_exception(exc), start)] * len(images)
        try:
            if len(prepared) == 1:
                outputs = [self._call(provider.remote, lambda: provider.predict(prepared[0]))]
            else:
                outputs = self._call(provider.remote, lambda: provider.predict_batch(prepared))
            if len(outputs) != len(prepared):
                raise _Failed(_error("invalid_output", "the provider returned the wrong number of results"))
        except _Failed as failed:
            log.warning("AI provider %s failed (%s)", name, failed.error.code)
            return [self._error_result(name, provider, failed.error, start)] * len(images)
        share = len(images)
        return [
            self._finish(name, provider, output, image, start, share)
            for output, image in zip(outputs, images, strict=True)
        ]

    def _finish(
        self,
        name: str,
        provider: Provider,
        output: ProviderOutput,
        image: ImageInput,
        start: float,
        share: int,
    ) -> AnalysisResult:
        try:
            fields = self._fields(name, provider, output)
            result = AnalysisResult.model_validate({**fields, "processing_time": self._elapsed(start, share)})
        except ValidationError:
            log.warning("AI provider %s returned output that failed validation", name)
            error = _error("invalid_output", "the provider's output failed validation")
            return self._error_result(name, provider, error, start, share)
        if self._writer is None or output.report_text is not None:
            return result
        return self._narrate(result, fields, image, start, share)

    def _narrate(
        self,
        result: AnalysisResult,
        fields: dict[str, Any],
        image: ImageInput,
        start: float,
        share: int,
    ) -> AnalysisResult:
        writer = self._writer
        assert writer is not None
        try:
            text = self._call(writer.remote, lambda: writer.write_report(result, image.meta, image.display))
            info = writer.model_info
            update: dict[str, Any] = {
                "report_text": text,
                "report_provenance": {
                    "provider": writer.name,
                    "model": info.model,
                    "version": info.version,
                    "weights_sha256": info.weights_sha256,
                },
            }
        except _Failed as failed:
            log.warning("AI report writer %s failed (%s)", writer.name, failed.error.code)
            update = {"warnings": [*fields.get("warnings", []), f"report_writer_failed:{failed.error.code}"]}
        try:
            return AnalysisResult.model_validate(
                {**fields, **update, "processing_time": self._elapsed(start, share)}
            )
        except ValidationError:
            warnings = [*fields.get("warnings", []), "report_writer_failed:invalid_output"]
            return AnalysisResult.model_validate(
                {**fields, "warnings": warnings, "processing_time": self._elapsed(start, share)}
            )

    def _fields(self, name: str, provider: Provider, output: ProviderOutput) -> dict[str, Any]:
        findings = list(output.findings)
        info = provider.model_info
        model = output.model or info.model
        risk = output.risk_score if output.risk_score is not None else risk_from_findings(findings)
        confidence = output.confidence
        if confidence is None and findings:
            confidence = sum(f.confidence for f in findings) / len(findings)
        return {
            "status": "ok",
            "findings": findings,
            "risk_score": round(risk),
            "suggested_diagnosis": output.suggested_diagnosis,
            "confidence": None if confidence is None else round(confidence, 6),
            "label_probabilities": dict(output.label_probabilities),
            "report_text": output.report_text,
            "recommendations": list(output.recommendations),
            "model_used": model,
            "provenance": Provenance(
                provider=name, model=model, version=info.version, weights_sha256=info.weights_sha256
            ),
            "timestamp": self._clock(),
            "simulated": provider.simulated,
        }

    def _call(self, remote: bool, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a worker under the deadline, retrying remote service errors; raise _Failed."""
        deadline = self._timer() + self._timeout
        attempt = 0
        while True:
            attempt += 1
            future: Future[T] = self._executor.submit(fn)
            try:
                return future.result(timeout=max(0.0, deadline - self._timer()))
            except FuturesTimeout:
                future.cancel()
                raise _Failed(
                    _error("service_timeout", f"the AI provider did not answer within {self._timeout:g} s")
                ) from None
            except ExternalServiceError as exc:
                if not remote or attempt >= self._retry.attempts:
                    raise _Failed(_from_exception(exc)) from None
                delay = self._retry.delay(attempt, getattr(exc, "retry_after", None))
                if self._timer() + delay >= deadline:
                    raise _Failed(_from_exception(exc)) from None
                log.info("AI service error (%s); retrying in %.2f s", exc.code, delay)
                self._sleep(delay)
            except IrmsiaError as exc:
                raise _Failed(_from_exception(exc)) from None
            except ValidationError:
                raise _Failed(_error("invalid_output", "the provider's output failed validation")) from None

    def _elapsed(self, start: float, share: int = 1) -> float:
        return round(max(0.0, self._timer() - start) / share, 6)

    def _error_result(
        self, name: str, provider: Provider | None, error: ResultError, start: float, share: int = 1
    ) -> AnalysisResult:
        model = provider.model_info.model if provider is not None else name
        version = provider.model_info.version if provider is not None else "unknown"
        digest = provider.model_info.weights_sha256 if provider is not None else None
        return AnalysisResult(
            status="error",
            error=error,
            model_used=model,
            provenance=Provenance(provider=name, model=model, version=version, weights_sha256=digest),
            processing_time=self._elapsed(start, share),
            timestamp=self._clock(),
            simulated=provider.simulated if provider is not None else False,
        )


__all__ = [
    "AnalysisContext",
    "AnalysisRunner",
    "ProviderFactory",
    "ProviderPool",
    "RetryPolicy",
]
