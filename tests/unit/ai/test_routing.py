"""Routing rules pick the provider by modality and body part."""

from __future__ import annotations

import pytest

from irmsia.ai.routing import Router, describe
from irmsia.errors import ConfigError

ROUTES = '[{"modality": ["CR", "DX"], "body_part": "CHEST", "provider": "torchxrayvision"}, {"modality": "CT", "provider": "onnx"}]'


def test_the_first_matching_rule_wins_else_the_default() -> None:
    router = Router.from_json(ROUTES, default="builtin")

    assert router.select("DX", "chest") == "torchxrayvision"
    assert router.select("CR", "HAND") == "builtin"
    assert router.select("CT", "HEAD") == "onnx"
    assert router.select("MR", "") == "builtin"
    assert router.providers() == {"builtin", "torchxrayvision", "onnx"}


def test_empty_routes_use_the_default() -> None:
    assert Router.from_json("  ", default="mock").select("CR", "CHEST") == "mock"


@pytest.mark.parametrize(
    "routes",
    [
        "not json",
        '{"modality": "CR"}',
        '[{"modality": "CR"}]',
        '[{"modality": 3, "provider": "onnx"}]',
        '[{"modality": "CR", "provider": "skynet"}]',
        '[{"modalty": "CR", "provider": "onnx"}]',
    ],
)
def test_malformed_routes_are_config_errors(routes: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Router.from_json(routes, default="builtin")
    assert "AI" in str(raised.value)


def test_an_unknown_default_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Router(default="chain")


def test_rules_describe_themselves() -> None:
    router = Router.from_json(ROUTES, default="builtin")

    assert describe(router.rules) == ["CR,DX / CHEST -> torchxrayvision", "CT / * -> onnx"]
