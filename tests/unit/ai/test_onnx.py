"""The onnx provider: model cards, labels from metadata, batching, bad cards and bad files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the onnx provider's tests need onnx and onnxruntime (irmsia[ai])")
pytest.importorskip("onnxruntime", reason="the onnx provider's tests need onnxruntime (irmsia[ai])")

from irmsia.ai import create_provider
from irmsia.ai.base import ImageInput, ImageMeta
from irmsia.ai.modelcard import load_model_card
from irmsia.ai.onnxmodel import OnnxProvider, labels_from_metadata
from irmsia.ai.preprocess import prepare
from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool
from irmsia.ai.weights import file_sha256
from irmsia.errors import ProviderUnavailable
from tests.unit.ai.builders import LABELS, onnx_card
from tests.unit.ai.conftest import FIXED_NOW


def _image(level: int, shape: tuple[int, int] = (40, 40)) -> ImageInput:
    display = np.full(shape, level, dtype=np.uint8)
    display[::2] = 255 - level  # some structure
    return ImageInput(display=display, meta=ImageMeta(modality="CR", body_part="CHEST"))


def _reference(level: int, card_path: Path) -> np.ndarray:
    """The tiny model computed by hand: mean of the prepared image → linear → sigmoid."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(card_path.parent / "tiny.onnx"))
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    prepared = prepare(_image(level), load_model_card(card_path).input.spec()).tensor
    logits = prepared.mean() * weights["weight"][0] + weights["bias"]
    return 1 / (1 + np.exp(-logits))


@pytest.fixture
def card(tmp_path: Path) -> Path:
    return onnx_card(tmp_path)


@pytest.fixture
def runner(card: Path) -> Iterator[AnalysisRunner]:
    built = AnalysisRunner(
        ProviderPool({"onnx": lambda: OnnxProvider(card, threads=1, spinning=False)}),
        Router("onnx"),
        clock=lambda: FIXED_NOW,
    )
    yield built
    built.close()


def test_probabilities_match_the_model_computed_by_hand(runner: AnalysisRunner, card: Path) -> None:
    result = runner.analyze_image(_image(60))

    assert result.status == "ok"
    assert list(result.label_probabilities) == list(LABELS)
    got = np.array([result.label_probabilities[label] for label in LABELS], dtype=np.float64)
    np.testing.assert_allclose(got, _reference(60, card), atol=1e-5)
    assert result.provenance.model == "tiny-classifier" and result.provenance.version == "0.1"
    assert result.provenance.weights_sha256 == file_sha256(card.parent / "tiny.onnx")
    assert (card.parent / "tiny.onnx").stat().st_size < 4096


def test_a_batch_runs_once_and_matches_single_images(runner: AnalysisRunner) -> None:
    images = [_image(level) for level in (10, 120, 240)]

    batch = runner.analyze_batch(images)
    singles = [runner.analyze_image(image) for image in images]

    for one, many in zip(singles, batch, strict=True):
        for label in LABELS:
            assert one.label_probabilities[label] == pytest.approx(many.label_probabilities[label], abs=1e-6)


def test_findings_follow_the_bands(runner: AnalysisRunner) -> None:
    result = runner.analyze_image(_image(60))

    for finding in result.findings:
        assert finding.confidence >= 0.5
        assert finding.code is not None and finding.code.startswith("label.")


def test_labels_can_come_from_the_model_metadata(tmp_path: Path) -> None:
    card_path = onnx_card(tmp_path, labels=None, metadata_labels=True)

    provider = OnnxProvider(card_path)

    assert provider.head.labels == LABELS
    assert labels_from_metadata({"labels": "a, b ,c"}) == ["a", "b", "c"]


def test_softmax_cards_give_probabilities_that_sum_to_one(tmp_path: Path) -> None:
    provider = OnnxProvider(onnx_card(tmp_path, activation="softmax"))

    [output] = provider.predict_batch([prepare(_image(90), provider.input_spec)])

    assert sum(v for v in output.label_probabilities.values() if v is not None) == pytest.approx(
        1.0, abs=1e-5
    )


def test_card_restrictions_make_other_modalities_unsupported(tmp_path: Path) -> None:
    card_path = onnx_card(tmp_path, extra={"modalities": ["dx"], "body_parts": ["chest"]})
    runner = AnalysisRunner(
        ProviderPool({"onnx": lambda: OnnxProvider(card_path)}), Router("onnx"), clock=lambda: FIXED_NOW
    )
    try:
        result = runner.analyze_image(_image(60))
    finally:
        runner.close()

    assert result.error is not None and result.error.code == "unsupported_input"


def test_the_registry_builds_the_onnx_provider(card: Path) -> None:
    provider = create_provider("onnx", card_path=card, threads=1, spinning=False)

    assert provider.name == "onnx" and provider.model_info.model == "tiny-classifier"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda card: card.pop("intended_use"), "intended_use"),
        (lambda card: card.update(output={"activation": "relu"}), "output.activation"),
        (lambda card: card.update(surprise=True), "surprise"),
        (lambda card: card["input"].update(size=[0, 32]), "input"),
        (lambda card: card.update(output={"labels": ["a", "b"]}), "output width"),
        (lambda card: card.update(model="missing.onnx"), "not found"),
        (lambda card: card.update(output={"labels": ["a", "b", "c"], "name": "nope"}), "does not have"),
    ],
)
def test_a_malformed_card_is_a_clear_error(card: Path, mutate: object, expected: str) -> None:
    data = json.loads(card.read_text())
    mutate(data)  # type: ignore[operator]
    card.write_text(json.dumps(data))

    with pytest.raises(ProviderUnavailable) as raised:
        OnnxProvider(card)
    assert expected in raised.value.detail


def test_a_card_that_is_not_json_or_yaml_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text("{not json")
    (tmp_path / "card.yaml").write_text("name: [unclosed")

    for name in ("card.json", "card.yaml", "absent.json"):
        with pytest.raises(ProviderUnavailable):
            OnnxProvider(tmp_path / name)


def test_a_yaml_card_works(card: Path) -> None:
    yaml = pytest.importorskip("yaml")
    yaml_card = card.with_suffix(".yaml")
    yaml_card.write_text(yaml.safe_dump(json.loads(card.read_text())))

    assert OnnxProvider(yaml_card).head.labels == LABELS


def test_a_model_file_that_is_not_onnx_is_a_clear_error(card: Path) -> None:
    (card.parent / "tiny.onnx").write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)

    with pytest.raises(ProviderUnavailable) as raised:
        OnnxProvider(card)
    assert raised.value.detail == "the model file is not a valid ONNX model"


def test_cuda_without_a_cuda_build_is_unavailable(card: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")
    with pytest.raises(ProviderUnavailable):
        OnnxProvider(card, device="cuda")
