"""Building the runner from configuration values."""

from __future__ import annotations

from pathlib import Path

import pytest

from irmsia.ai.factory import AIConfig, build_runner
from irmsia.errors import ConfigError
from tests.factories import make_cr, make_ct
from tests.unit.ai.conftest import FIXED_NOW


def test_the_default_configuration_runs_builtin_quality_control() -> None:
    runner = build_runner(AIConfig(), clock=lambda: FIXED_NOW)
    try:
        result = runner.analyze(make_ct())
    finally:
        runner.close()

    assert result.status == "ok" and result.provenance.provider == "builtin"
    assert result.simulated is False


def test_routes_and_a_report_writer_come_from_configuration() -> None:
    config = AIConfig(routes='[{"modality": "CR", "provider": "mock"}]', report_writer="mock")
    runner = build_runner(config, clock=lambda: FIXED_NOW)
    try:
        cr, ct = runner.analyze(make_cr()), runner.analyze(make_ct())
    finally:
        runner.close()

    assert cr.provenance.provider == "mock" and cr.simulated is True
    assert ct.provenance.provider == "builtin"
    assert cr.report_text is not None and ct.report_text is not None


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("onnx", "AI_ONNX_MODEL_CARD"),
        ("torchxrayvision", "WEIGHTS_DIR"),
        ("huggingface", "HUGGINGFACE_MODEL"),
    ],
)
def test_unconfigured_providers_say_which_setting_is_missing(name: str, setting: str) -> None:
    runner = build_runner(AIConfig(), clock=lambda: FIXED_NOW)
    try:
        result = runner.analyze(make_cr(), provider=name)
        status = runner.preload([name])
    finally:
        runner.close()

    assert result.error is not None and result.error.code == "provider_unavailable"
    assert setting in result.error.message or "install" in result.error.message
    assert status == {name: "provider_unavailable"}


def test_missing_weights_in_the_weights_dir_are_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    runner = build_runner(AIConfig(weights_dir=tmp_path), clock=lambda: FIXED_NOW)
    try:
        result = runner.analyze(make_cr(), provider="torchxrayvision")
    finally:
        runner.close()

    assert result.error is not None and "not found" in result.error.message


def test_relative_model_cards_live_under_the_weights_dir(tmp_path: Path) -> None:
    config = AIConfig(weights_dir=tmp_path, onnx_model_card=Path("chest/card.json"))

    assert config.weights_path(Path("chest/card.json")) == tmp_path / "chest" / "card.json"
    assert config.weights_path(Path("/abs/card.json")) == Path("/abs/card.json")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"report_writer": "gpt"},
        {"device": "tpu"},
        {"timeout": 0},
        {"workers": 0},
    ],
)
def test_invalid_values_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AIConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_routes_fail_at_build_time() -> None:
    with pytest.raises(ConfigError):
        build_runner(AIConfig(routes='[{"provider": "nope"}]'), clock=lambda: FIXED_NOW)
