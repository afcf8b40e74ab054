"""The huggingface provider on tiny, randomly initialised local models: offline only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the huggingface provider needs torch (irmsia[ai-torch])")
pytest.importorskip("transformers", reason="the huggingface provider needs transformers (irmsia[ai-torch])")

from irmsia.ai.base import ImageInput, ImageMeta
from irmsia.ai.huggingface import HuggingFaceProvider
from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool
from irmsia.errors import ProviderUnavailable
from tests.unit.ai.builders import tiny_hf_captioner, tiny_hf_classifier, tiny_hf_git
from tests.unit.ai.conftest import FIXED_NOW


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _image(level: int = 80) -> ImageInput:
    display = np.full((48, 40), level, dtype=np.uint8)
    display[10:30, 8:30] = 200
    return ImageInput(display=display, meta=ImageMeta(modality="CR", body_part="CHEST"))


def _analyze(provider: HuggingFaceProvider, images: list[ImageInput]) -> list:  # type: ignore[type-arg]
    runner = AnalysisRunner(
        ProviderPool({"huggingface": lambda: provider}), Router("huggingface"), clock=lambda: FIXED_NOW
    )
    try:
        return runner.analyze_batch(images)
    finally:
        runner.close()


def test_an_image_classifier_reports_its_labels(tmp_path: Path) -> None:
    provider = HuggingFaceProvider(tiny_hf_classifier(tmp_path / "cls"), threads=1)

    [result] = _analyze(provider, [_image()])

    assert provider.task == "classification"
    assert result.status == "ok"
    assert set(result.label_probabilities) == {"normal", "abnormal"}
    assert sum(result.label_probabilities.values()) == pytest.approx(1.0, abs=1e-5)  # type: ignore[arg-type]
    assert all(f.code != "label.normal" for f in result.findings)
    assert result.provenance.weights_sha256 is not None and len(result.provenance.weights_sha256) == 64


def test_a_batch_of_images_gives_one_result_each(tmp_path: Path) -> None:
    provider = HuggingFaceProvider(tiny_hf_classifier(tmp_path / "cls"))

    results = _analyze(provider, [_image(10), _image(90), _image(200)])

    assert [r.status for r in results] == ["ok", "ok", "ok"]


def test_an_image_to_text_model_writes_the_report_text(tmp_path: Path) -> None:
    provider = HuggingFaceProvider(tiny_hf_captioner(tmp_path / "cap", word="radiograph"), max_new_tokens=4)

    [result] = _analyze(provider, [_image()])

    assert provider.task == "image-to-text"
    assert result.status == "ok"
    assert result.report_text == "radiograph radiograph radiograph radiograph"
    assert result.findings == []


def test_a_git_model_writes_the_report_text_through_its_processor(tmp_path: Path) -> None:
    directory = tiny_hf_git(tmp_path / "git", word="chest")
    assert (directory / "processor_config.json").is_file()  # loaded via AutoProcessor, not piecewise
    provider = HuggingFaceProvider(directory, max_new_tokens=3)

    results = _analyze(provider, [_image(10), _image(200)])

    assert provider.task == "image-to-text"
    assert [r.status for r in results] == ["ok", "ok"]
    for result in results:
        assert result.report_text == "chest chest chest"  # the [CLS] prompt token is not decoded
        assert result.findings == [] and result.label_probabilities == {}
        assert result.provenance.model == "huggingface:git"
        assert result.provenance.weights_sha256 is not None and len(result.provenance.weights_sha256) == 64


def test_a_git_model_without_its_tokenizer_is_unavailable(tmp_path: Path) -> None:
    directory = tiny_hf_git(tmp_path / "git")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).unlink()

    with pytest.raises(ProviderUnavailable):
        HuggingFaceProvider(directory)


def test_a_directory_without_a_model_is_unavailable(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tiny_hf_classifier(tmp_path / "broken")
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    no_weights = tiny_hf_classifier(tmp_path / "no-weights")
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()

    for directory in (empty, broken, no_weights, tmp_path / "absent"):
        with pytest.raises(ProviderUnavailable):
            HuggingFaceProvider(directory)


def test_a_model_that_is_neither_kind_is_unavailable(tmp_path: Path) -> None:
    directory = tiny_hf_classifier(tmp_path / "cls")
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["ViTModel"]
    (directory / "config.json").write_text(json.dumps(config))

    with pytest.raises(ProviderUnavailable) as raised:
        HuggingFaceProvider(directory)
    assert "neither" in raised.value.detail
