"""One contract for every AI provider: the same tests run against each one that can be built here.

Providers whose optional libraries are not installed are skipped with the reason; the tiny models
are built by the tests (tests/unit/ai/builders.py), the OpenAI-compatible server runs on loopback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from irmsia.ai import create_provider
from irmsia.ai.base import Provider
from irmsia.ai.inputs import image_input
from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool
from irmsia.ai.schema import DISCLAIMER, AnalysisResult
from irmsia.errors import InvalidDicom
from tests.factories import EnhancedSRStorage, contains_phi, make_ct
from tests.unit.ai.builders import (
    ChatServer,
    chat_server,
    onnx_card,
    random_xrv_weights,
    tiny_hf_captioner,
    tiny_hf_classifier,
)
from tests.unit.ai.conftest import FIXED_NOW, chest_phantom, cr_dataset

KINDS = [
    "mock",
    "builtin",
    "onnx",
    "torchxrayvision",
    "huggingface-classifier",
    "huggingface-captioner",
    "openai",
]
NEEDS = {
    "onnx": ("onnxruntime", "onnx"),
    "torchxrayvision": ("torch", "torchxrayvision"),
    "huggingface-classifier": ("torch", "transformers"),
    "huggingface-captioner": ("torch", "transformers"),
}


@pytest.fixture(scope="module")
def server() -> Iterator[ChatServer]:
    with chat_server() as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture(scope="module", params=KINDS)
def provider_kind(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    server: ChatServer,
    http: httpx.Client,
) -> tuple[str, Callable[[], Provider]]:
    kind: str = request.param
    missing = [name for name in NEEDS.get(kind, ()) if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the {kind} provider needs {', '.join(missing)} (an irmsia AI extra)")
    directory = tmp_path_factory.mktemp(kind)
    factories: dict[str, Callable[[], Provider]] = {
        "mock": lambda: create_provider("mock"),
        "builtin": lambda: create_provider("builtin"),
        "onnx": lambda: create_provider("onnx", card_path=onnx_card(directory), threads=1),
        "torchxrayvision": lambda: create_provider(
            "torchxrayvision", weights_path=random_xrv_weights(directory / "w.pt"), threads=1
        ),
        "huggingface-classifier": lambda: create_provider(
            "huggingface", model_dir=tiny_hf_classifier(directory)
        ),
        "huggingface-captioner": lambda: create_provider(
            "huggingface", model_dir=tiny_hf_captioner(directory), max_new_tokens=3
        ),
        "openai": lambda: create_provider(
            "openai", http=http, model="vision-test", base_url=server.url, api_key="k"
        ),
    }
    provider = factories[kind]()
    return provider.name, lambda: provider


@pytest.fixture
def runner(provider_kind: tuple[str, Callable[[], Provider]]) -> Iterator[AnalysisRunner]:
    name, factory = provider_kind
    built = AnalysisRunner(ProviderPool({name: factory}), Router(name), clock=lambda: FIXED_NOW)
    yield built
    built.close(providers=False)  # the module-scoped provider stays open for the next test


def test_a_chest_radiograph_gets_a_valid_labelled_result(
    runner: AnalysisRunner, provider_kind: tuple[str, Callable[[], Provider]]
) -> None:
    name, factory = provider_kind

    result = runner.analyze(cr_dataset(chest_phantom()))

    assert result.status == "ok", result.error
    assert result.ai_generated is True and result.disclaimer == DISCLAIMER
    assert result.provenance.provider == name
    assert result.simulated is (name == "mock")
    assert result.timestamp == FIXED_NOW and result.processing_time >= 0
    assert result.risk_score is not None and 0 <= result.risk_score <= 100
    assert result.findings or result.label_probabilities or result.report_text
    assert AnalysisResult.model_validate_json(result.canonical_json()).sha256() == result.sha256()
    assert factory().model_info.model == result.provenance.model or name == "openai"


def test_no_identifier_from_the_dataset_reaches_the_result(
    runner: AnalysisRunner, server: ChatServer
) -> None:
    before = len(server.requests)

    result = runner.analyze(cr_dataset(chest_phantom()))

    assert contains_phi(result.canonical_json()) == []
    for body in server.requests[before:]:  # what an OpenAI-compatible service was sent
        assert contains_phi(str(body)) == []


def test_a_batch_gives_one_result_per_image_in_order(runner: AnalysisRunner) -> None:
    images = [image_input(cr_dataset(chest_phantom(seed=seed)), with_modality=True) for seed in (1, 2)]

    results = runner.analyze_batch(images)

    assert len(results) == 2 and all(r.status == "ok" for r in results)


def test_a_structured_report_is_refused_before_any_provider_runs(runner: AnalysisRunner) -> None:
    ds = cr_dataset(chest_phantom())
    del ds.PixelData
    ds.SOPClassUID = EnhancedSRStorage

    with pytest.raises(InvalidDicom):
        runner.analyze(ds)


def test_an_image_the_provider_does_not_take_is_an_error_result_not_a_crash(
    runner: AnalysisRunner, provider_kind: tuple[str, Callable[[], Provider]]
) -> None:
    result = runner.analyze(make_ct())

    provider = provider_kind[1]()
    if provider.modalities is not None and "CT" not in provider.modalities:
        assert result.status == "error"
        assert result.error is not None and result.error.code == "unsupported_input"
    else:
        assert result.status == "ok"


def test_results_serialise_to_canonical_json(runner: AnalysisRunner, tmp_path: Path) -> None:
    result = runner.analyze(cr_dataset(chest_phantom()))
    path = tmp_path / "result.json"
    path.write_bytes(result.canonical_json())

    assert AnalysisResult.model_validate_json(path.read_bytes()) == result
