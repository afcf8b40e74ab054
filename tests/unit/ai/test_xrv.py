"""The torchxrayvision provider: architecture without torchvision, local weights only, masking,
and the ONNX export that runs through the onnx provider with the same probabilities."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the torchxrayvision provider needs torch (irmsia[ai-torch])")
# Not importorskip: a plain `import torchxrayvision` needs torchvision, which the provider avoids.
if importlib.util.find_spec("torchxrayvision") is None:
    pytest.skip(
        "the torchxrayvision provider needs torchxrayvision (irmsia[ai-torch])", allow_module_level=True
    )

import torch

from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool
from irmsia.ai.weights import file_sha256
from irmsia.ai.xrv import TorchXRayVisionProvider, export_onnx, load_xrv_models
from irmsia.errors import ProviderUnavailable
from tests.unit.ai.builders import random_xrv_weights
from tests.unit.ai.conftest import FIXED_NOW, chest_phantom, cr_dataset, cr_input

XRV_NIH_UNTRAINED = {"Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_xrv_weights(tmp_path_factory.mktemp("xrv") / "densenet121-res224-all.pt")


@pytest.fixture(scope="module")
def provider(weights: Path) -> TorchXRayVisionProvider:
    return TorchXRayVisionProvider(weights, threads=1)


@pytest.fixture
def runner(provider: TorchXRayVisionProvider) -> Iterator[AnalysisRunner]:
    built = AnalysisRunner(
        ProviderPool({"torchxrayvision": lambda: provider}),
        Router("torchxrayvision"),
        clock=lambda: FIXED_NOW,
    )
    yield built
    built.close(providers=False)  # keep the module-scoped provider open


def test_the_architecture_loads_without_torchvision_and_leaves_no_trace() -> None:
    filters = list(warnings.filters)
    models = load_xrv_models()

    model = models.DenseNet(weights=None)
    assert len(model.targets) == 18
    assert sum(p.numel() for p in model.parameters()) == 6_966_034  # DenseNet-121, 18 outputs
    assert warnings.filters == filters
    for name in ("torchvision", "torchxrayvision", "torchxrayvision.datasets"):
        if name in sys.modules:  # only real modules may stay, never the loader's placeholders
            assert getattr(sys.modules[name], "__file__", None) is not None


def test_a_chest_radiograph_gets_eighteen_labels_and_provenance(
    runner: AnalysisRunner, weights: Path
) -> None:
    result = runner.analyze(cr_dataset(chest_phantom()))

    assert result.status == "ok"
    assert len(result.label_probabilities) == 18
    assert all(p is not None and 0.0 <= p <= 1.0 for p in result.label_probabilities.values())
    assert result.provenance.weights_sha256 == file_sha256(weights)
    assert result.provenance.model == "torchxrayvision-densenet121-densenet121-res224-all"


def test_the_published_preprocessing_is_used(provider: TorchXRayVisionProvider) -> None:
    spec = provider.input_spec

    assert spec.size == (224, 224) and spec.resize == "center_crop" and spec.channels == 1
    assert spec.value_range == (-1024.0, 1024.0) and spec.representation == "display"


def test_other_modalities_and_body_parts_are_unsupported(runner: AnalysisRunner) -> None:
    from tests.factories import make_ct

    ct = runner.analyze(make_ct())
    hand = runner.analyze(cr_dataset(chest_phantom(), BodyPartExamined="HAND"))

    assert ct.error is not None and ct.error.code == "unsupported_input"
    assert hand.error is not None and hand.error.code == "unsupported_input"


def test_labels_untrained_in_a_weights_set_are_not_available(weights: Path) -> None:
    provider = TorchXRayVisionProvider(weights, weights_name="densenet121-res224-nih")

    [output] = provider.predict_batch([_prepared(provider)])

    missing = {label for label, p in output.label_probabilities.items() if p is None}
    assert missing == XRV_NIH_UNTRAINED
    assert not any(f.code and f.code.split(".", 1)[1] in {"fracture", "lung_lesion"} for f in output.findings)


def test_labels_can_come_with_the_weights_file(tmp_path: Path) -> None:
    labels = ["Atelectasis"] + [""] * 17
    path = random_xrv_weights(tmp_path / "custom.pt", wrapped=True, labels=labels)

    provider = TorchXRayVisionProvider(path, weights_name="custom")
    [output] = provider.predict_batch([_prepared(provider)])

    available = [label for label, p in output.label_probabilities.items() if p is not None]
    assert available == ["Atelectasis"]


def _prepared(provider: TorchXRayVisionProvider):  # type: ignore[no-untyped-def]
    from irmsia.ai.preprocess import prepare

    return prepare(cr_input(chest_phantom()), provider.input_spec)


def test_a_pickled_model_file_is_refused_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module: needs weights_only=False

    with pytest.raises(ProviderUnavailable) as raised:
        TorchXRayVisionProvider(path)
    assert "weights_only" in raised.value.detail


def test_garbage_and_missing_weights_are_clear_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 100)
    wrong = tmp_path / "wrong.pt"
    torch.save({"classifier.weight": torch.zeros(3, 3)}, wrong)

    for path, expected in (
        (garbage, "weights_only"),
        (wrong, "architecture"),
        (tmp_path / "absent.pt", "not found"),
    ):
        with pytest.raises(ProviderUnavailable) as raised:
            TorchXRayVisionProvider(path)
        assert expected in raised.value.detail


@pytest.mark.slow
def test_the_onnx_export_gives_the_same_probabilities_through_the_onnx_provider(
    provider: TorchXRayVisionProvider, weights: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime", reason="the export check needs onnxruntime (irmsia[ai])")
    from irmsia.ai.onnxmodel import OnnxProvider

    card = export_onnx(weights, tmp_path / "densenet121.onnx")
    onnx_provider = OnnxProvider(card, threads=2)
    images = [cr_input(chest_phantom(seed=seed)) for seed in (1, 2)]

    runner = AnalysisRunner(
        ProviderPool({"onnx": lambda: onnx_provider, "torchxrayvision": lambda: provider}),
        Router("onnx"),
        clock=lambda: FIXED_NOW,
    )
    try:
        via_onnx = runner.analyze_batch(images, provider="onnx")
        via_torch = runner.analyze_batch(images, provider="torchxrayvision")
    finally:
        runner.close(providers=False)

    for a, b in zip(via_onnx, via_torch, strict=True):
        assert a.status == b.status == "ok"
        assert a.label_probabilities.keys() == b.label_probabilities.keys()
        for label, p in a.label_probabilities.items():
            assert p == pytest.approx(b.label_probabilities[label], abs=1e-4)
    assert np.isclose(
        sum(p or 0 for p in via_onnx[0].label_probabilities.values()),
        sum(p or 0 for p in via_torch[0].label_probabilities.values()),
        atol=1e-3,
    )
