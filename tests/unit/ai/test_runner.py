"""The runner: routing, deadlines, retries, validation, labelling, provenance, chaining."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import numpy as np
import pytest

from irmsia.ai.base import (
    ImageInput,
    ImageMeta,
    InputSpec,
    ModelInfo,
    PreparedImage,
    Provider,
    ProviderOutput,
)
from irmsia.ai.mock import MockReportWriter
from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool, RetryPolicy
from irmsia.ai.schema import DISCLAIMER, AnalysisResult, Finding, Severity
from irmsia.errors import AIError, ExternalServiceError, InvalidDicom, ProviderUnavailable, ServiceTimeout
from tests.factories import make_cr, make_ct
from tests.unit.ai.conftest import FIXED_NOW

FINDING = Finding(
    description="Something measured", confidence=0.9, severity=Severity.MODERATE, code="test.one"
)


class Scripted(Provider):
    """A provider whose ``predict`` runs the next scripted step (a value or an exception)."""

    name: ClassVar[str] = "scripted"
    model_info = ModelInfo(model="scripted-model", version="2.1", weights_sha256="ab" * 32)
    input_spec = InputSpec(size=(8, 8), channels=1, value_range=(0.0, 1.0))

    def __init__(self, steps: Sequence[ProviderOutput | BaseException], *, remote: bool = False) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.batches: list[int] = []
        self.seen: list[PreparedImage] = []
        self.remote = remote

    def predict(self, image: PreparedImage) -> ProviderOutput:
        self.calls += 1
        self.seen.append(image)
        step = self.steps[min(self.calls, len(self.steps)) - 1]
        if isinstance(step, BaseException):
            raise step
        return step

    def predict_batch(self, images: Sequence[PreparedImage]) -> list[ProviderOutput]:
        self.batches.append(len(images))
        return [self.predict(image) for image in images]


class Blocking(Provider):
    """A provider that waits until the test releases it: a provider that hangs."""

    name: ClassVar[str] = "blocking"
    model_info = ModelInfo(model="blocking", version="1")

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict(self, image: PreparedImage) -> ProviderOutput:
        self.release.wait(10)
        return ProviderOutput()


def _runner(
    providers: dict[str, Callable[[], Provider]],
    *,
    default: str = "builtin",
    timeout: float = 30.0,
    retry: RetryPolicy | None = None,
    sleeps: list[float] | None = None,
    router: Router | None = None,
    **kwargs: object,
) -> AnalysisRunner:
    recorded = sleeps if sleeps is not None else []
    return AnalysisRunner(
        ProviderPool(providers),
        router or Router(default=default),
        clock=lambda: FIXED_NOW,
        timeout=timeout,
        retry=retry,
        sleep=recorded.append,
        **kwargs,
    )


@pytest.fixture
def image() -> ImageInput:
    display = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    return ImageInput(display=display, meta=ImageMeta(modality="CR", body_part="CHEST", rows=16, columns=16))


@pytest.fixture
def cleanup() -> Iterator[list[AnalysisRunner]]:
    runners: list[AnalysisRunner] = []
    yield runners
    for runner in runners:
        runner.close()


def test_result_is_labelled_ai_generated_with_provenance(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    provider = Scripted([ProviderOutput(findings=[FINDING], suggested_diagnosis="x")])
    runner = _runner({"builtin": lambda: provider})
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.status == "ok" and result.error is None
    assert result.ai_generated is True and result.disclaimer == DISCLAIMER
    assert result.simulated is False
    assert result.provenance.provider == "builtin"
    assert result.provenance.model == "scripted-model" and result.provenance.version == "2.1"
    assert result.provenance.weights_sha256 == "ab" * 32
    assert result.model_used == "scripted-model"
    assert result.timestamp == FIXED_NOW
    assert result.processing_time >= 0
    assert result.findings == [FINDING]


def test_risk_and_confidence_are_derived_when_the_provider_gives_none(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    runner = _runner({"builtin": lambda: Scripted([ProviderOutput(findings=[FINDING])])})
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.risk_score == 36  # moderate (0.4) x confidence 0.9
    assert result.confidence == pytest.approx(0.9)


def test_preprocessing_follows_the_providers_input_spec(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    provider = Scripted([ProviderOutput()])
    runner = _runner({"builtin": lambda: provider})
    cleanup.append(runner)

    runner.analyze_image(image)

    tensor = provider.seen[0].tensor
    assert tensor.shape == (1, 8, 8) and tensor.dtype == np.float32
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


def test_a_hanging_provider_yields_a_timeout_result(image: ImageInput, cleanup: list[AnalysisRunner]) -> None:
    provider = Blocking()
    runner = _runner({"builtin": lambda: provider}, timeout=0.2)
    cleanup.append(runner)
    try:
        result = runner.analyze_image(image)
    finally:
        provider.release.set()

    assert result.status == "error"
    assert result.error is not None and result.error.code == "service_timeout"
    assert result.findings == []


def test_remote_service_errors_are_retried_with_backoff(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    provider = Scripted(
        [ExternalServiceError("down"), ServiceTimeout("slow"), ProviderOutput(findings=[FINDING])],
        remote=True,
    )
    sleeps: list[float] = []
    runner = _runner(
        {"builtin": lambda: provider}, retry=RetryPolicy(attempts=3, initial_delay=0.5), sleeps=sleeps
    )
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.status == "ok"
    assert provider.calls == 3
    assert sleeps == [0.5, 1.0]


def test_retry_after_from_the_service_sets_the_delay(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    limited = ExternalServiceError("rate limited")
    limited.retry_after = 7.0
    provider = Scripted([limited, ProviderOutput()], remote=True)
    sleeps: list[float] = []
    runner = _runner({"builtin": lambda: provider}, sleeps=sleeps)
    cleanup.append(runner)

    assert runner.analyze_image(image).status == "ok"
    assert sleeps == [7.0]


def test_retries_stop_after_the_configured_attempts(image: ImageInput, cleanup: list[AnalysisRunner]) -> None:
    provider = Scripted([ExternalServiceError("the AI service failed (HTTP 500)")], remote=True)
    runner = _runner({"builtin": lambda: provider}, retry=RetryPolicy(attempts=2))
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert provider.calls == 2
    assert result.error is not None
    assert result.error.code == "external_service_error"
    assert result.error.message == "the AI service failed (HTTP 500)"


def test_a_retry_that_would_overrun_the_deadline_is_not_attempted(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    limited = ExternalServiceError("rate limited")
    limited.retry_after = 3600.0
    provider = Scripted([limited, ProviderOutput()], remote=True)
    sleeps: list[float] = []
    runner = _runner(
        {"builtin": lambda: provider},
        timeout=5.0,
        retry=RetryPolicy(attempts=3, max_delay=7200),
        sleeps=sleeps,
    )
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.status == "error" and provider.calls == 1 and sleeps == []


def test_local_providers_are_not_retried(image: ImageInput, cleanup: list[AnalysisRunner]) -> None:
    provider = Scripted([ExternalServiceError("down"), ProviderOutput()], remote=False)
    runner = _runner({"builtin": lambda: provider})
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.status == "error" and provider.calls == 1


def test_ai_errors_are_not_retried_even_for_remote_providers(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    provider = Scripted([AIError("the model refused to analyse the image"), ProviderOutput()], remote=True)
    runner = _runner({"builtin": lambda: provider})
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert provider.calls == 1
    assert result.error is not None and result.error.code == "ai_error"


def test_output_that_fails_validation_becomes_an_error_result(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    bad = ProviderOutput(label_probabilities={"x": 1.5})
    runner = _runner({"builtin": lambda: Scripted([bad])})
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.status == "error"
    assert result.error is not None and result.error.code == "invalid_output"


def test_an_unavailable_provider_becomes_an_error_result(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    def missing() -> Provider:
        raise ProviderUnavailable("install irmsia[ai] for the onnx provider")

    runner = _runner({"onnx": missing}, default="onnx")
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.status == "error"
    assert result.error is not None
    assert result.error.code == "provider_unavailable"
    assert "irmsia[ai]" in result.error.message
    assert result.provenance.provider == "onnx"


def test_an_unconfigured_provider_name_becomes_an_error_result(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    runner = _runner({})
    cleanup.append(runner)

    result = runner.analyze_image(image, provider="openai")

    assert result.error is not None and result.error.code == "provider_unavailable"


def test_a_modality_the_provider_does_not_support_is_an_error_result(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    provider = Scripted([ProviderOutput()])
    provider.modalities = frozenset({"CT"})
    runner = _runner({"builtin": lambda: provider})
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.error is not None and result.error.code == "unsupported_input"
    assert "CR" in result.error.message
    assert provider.calls == 0


def test_routing_sends_chest_radiographs_to_the_routed_provider(cleanup: list[AnalysisRunner]) -> None:
    chest = Scripted([ProviderOutput()])
    default = Scripted([ProviderOutput()])
    router = Router.from_rules(
        [{"modality": ["CR", "DX"], "body_part": "CHEST", "provider": "onnx"}], "builtin"
    )
    runner = _runner({"onnx": lambda: chest, "builtin": lambda: default}, router=router)
    cleanup.append(runner)

    cr = runner.analyze(make_cr())
    ct = runner.analyze(make_ct())

    assert cr.provenance.provider == "onnx" and ct.provenance.provider == "builtin"
    assert chest.calls == 1 and default.calls == 1


def test_non_image_objects_raise_invalid_dicom(cleanup: list[AnalysisRunner]) -> None:
    runner = _runner({"builtin": lambda: Scripted([ProviderOutput()])})
    cleanup.append(runner)
    ds = make_cr()
    del ds.PixelData
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage

    with pytest.raises(InvalidDicom) as raised:
        runner.analyze(ds)
    assert raised.value.reason == "not_an_image"


def test_a_batch_goes_to_predict_batch_once(image: ImageInput, cleanup: list[AnalysisRunner]) -> None:
    provider = Scripted([ProviderOutput(findings=[FINDING])])
    runner = _runner({"builtin": lambda: provider})
    cleanup.append(runner)

    results = runner.analyze_batch([image, image, image])

    assert provider.batches == [3]
    assert [r.status for r in results] == ["ok", "ok", "ok"]


def test_a_batch_is_split_by_route_and_keeps_its_order(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    ct_image = ImageInput(display=image.display, meta=ImageMeta(modality="CT", body_part="HEAD"))
    router = Router.from_rules([{"modality": "CT", "provider": "mock"}], "builtin")
    runner = _runner(
        {"builtin": lambda: Scripted([ProviderOutput()]), "mock": lambda: Scripted([ProviderOutput()])},
        router=router,
    )
    cleanup.append(runner)

    results = runner.analyze_batch([image, ct_image, image])

    assert [r.provenance.provider for r in results] == ["builtin", "mock", "builtin"]


class WantsValues(Scripted):
    """A scripted provider that asks for the modality values (e.g. HU), like quality control does."""

    input_spec = InputSpec(size=(8, 8), channels=1, value_range=(0.0, 1.0), keep_modality=True)


def test_datasets_are_rendered_and_batched_per_provider_in_order(cleanup: list[AnalysisRunner]) -> None:
    chest = Scripted([ProviderOutput(findings=[FINDING])])
    other = WantsValues([ProviderOutput()])
    router = Router.from_rules([{"modality": "CR", "provider": "onnx"}], "builtin")
    runner = _runner({"onnx": lambda: chest, "builtin": lambda: other}, router=router)
    cleanup.append(runner)

    results = runner.analyze_datasets([make_cr(seed=1), make_ct(), make_cr(seed=2), make_ct(seed=3)])

    assert [r.provenance.provider for r in results] == ["onnx", "builtin", "onnx", "builtin"]
    assert chest.batches == [2] and other.batches == [2]
    assert [r.status for r in results] == ["ok"] * 4
    assert all(image.modality_values is not None for image in other.seen)  # decoded for who asks
    assert other.seen[0].modality_values is not None and other.seen[0].modality_values.min() < 0  # HU


def test_one_non_image_object_refuses_the_whole_batch_before_any_provider_runs(
    cleanup: list[AnalysisRunner],
) -> None:
    provider = Scripted([ProviderOutput()])
    runner = _runner({"builtin": lambda: provider})
    cleanup.append(runner)
    document = make_cr()
    del document.PixelData
    document.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR

    with pytest.raises(InvalidDicom) as raised:
        runner.analyze_datasets([make_cr(), document])

    assert raised.value.reason == "not_an_image"
    assert provider.calls == 0


def test_the_runner_hands_out_its_providers(cleanup: list[AnalysisRunner]) -> None:
    provider = Scripted([ProviderOutput()])
    runner = _runner({"builtin": lambda: provider})
    cleanup.append(runner)

    assert runner.provider("builtin") is provider
    with pytest.raises(ProviderUnavailable):
        runner.provider("onnx")


def test_a_report_writer_adds_the_narrative_and_its_provenance(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    runner = _runner(
        {"builtin": lambda: Scripted([ProviderOutput(findings=[FINDING])])}, report_writer=MockReportWriter()
    )
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.report_text is not None and "Something measured" in result.report_text
    assert result.report_provenance is not None
    assert result.report_provenance.model == "irmsia-mock-writer"
    assert result.findings == [FINDING]


def test_a_failing_report_writer_keeps_the_vision_result_with_a_warning(
    image: ImageInput, cleanup: list[AnalysisRunner]
) -> None:
    class Down(MockReportWriter):
        def write_report(self, result: AnalysisResult, meta: ImageMeta, display: np.ndarray | None) -> str:
            raise ExternalServiceError("the AI service cannot be reached")

    runner = _runner(
        {"builtin": lambda: Scripted([ProviderOutput(findings=[FINDING])])}, report_writer=Down()
    )
    cleanup.append(runner)

    result = runner.analyze_image(image)

    assert result.status == "ok" and result.findings == [FINDING]
    assert result.report_text is None
    assert result.warnings == ["report_writer_failed:external_service_error"]


def test_preload_reports_each_routed_provider(cleanup: list[AnalysisRunner]) -> None:
    def missing() -> Provider:
        raise ProviderUnavailable("set AI_ONNX_MODEL_CARD to use the onnx provider")

    router = Router.from_rules([{"modality": "CR", "provider": "onnx"}], "builtin")
    runner = _runner({"builtin": lambda: Scripted([]), "onnx": missing}, router=router)
    cleanup.append(runner)

    assert runner.preload() == {"builtin": "ok", "onnx": "provider_unavailable"}


def test_a_provider_is_built_once_and_closed_with_the_runner(image: ImageInput) -> None:
    built: list[Scripted] = []
    closed: list[str] = []

    class Closing(Scripted):
        def close(self) -> None:
            closed.append("closed")

    def factory() -> Provider:
        built.append(Closing([ProviderOutput()]))
        return built[-1]

    runner = _runner({"builtin": factory}, closers=[lambda: closed.append("client")])
    runner.analyze_image(image)
    runner.analyze_image(image)
    runner.close()

    assert len(built) == 1
    assert closed == ["closed", "client"]


def test_retry_policy_caps_delays() -> None:
    policy = RetryPolicy(initial_delay=1.0, multiplier=3.0, max_delay=5.0)

    assert [policy.delay(n) for n in (1, 2, 3)] == [1.0, 3.0, 5.0]
    assert policy.delay(1, retry_after=60.0) == 5.0


def test_closing_without_providers_leaves_shared_providers_open(image: ImageInput) -> None:
    closed: list[str] = []

    class Closing(Scripted):
        def close(self) -> None:
            closed.append("closed")

    shared = Closing([ProviderOutput()])
    runner = _runner({"builtin": lambda: shared}, closers=[lambda: closed.append("client")])
    runner.analyze_image(image)
    runner.close(providers=False)

    assert closed == []
