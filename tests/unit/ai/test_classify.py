"""Classifier heads: activations, operating points, masking of untrained labels, severity bands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from irmsia.ai.classify import ClassifierHead, SeverityBand
from irmsia.ai.schema import Severity
from irmsia.errors import AIError, ProviderUnavailable


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_sigmoid_scores_become_probabilities_and_findings_above_the_bands() -> None:
    head = ClassifierHead(labels=("A", "B", "C"))

    [out] = head.interpret(np.array([_logit(0.95), _logit(0.6), _logit(0.1)]))

    assert out.label_probabilities == pytest.approx({"A": 0.95, "B": 0.6, "C": 0.1})
    assert [(f.code, f.severity) for f in out.findings] == [
        ("label.a", Severity.HIGH),
        ("label.b", Severity.LOW),
    ]
    assert out.risk_score == 95
    assert out.suggested_diagnosis is not None and "A" in out.suggested_diagnosis


def test_operating_points_map_to_one_half_like_torchxrayvision() -> None:
    head = ClassifierHead(labels=("A", "B"), operating_points=(0.2, 0.8))

    probs = head.probabilities(np.array([[_logit(0.2), _logit(0.4)]]))[0]

    assert probs[0] == pytest.approx(0.5)
    assert probs[1] == pytest.approx(0.4 / (2 * 0.8))


def test_untrained_labels_are_not_available() -> None:
    head = ClassifierHead(
        labels=("A", "", "C"),
        operating_points=(0.3, 0.3, float("nan")),
        display_names=("A", "B", "C"),
    )

    [out] = head.interpret(np.array([5.0, 5.0, 5.0]))

    assert out.label_probabilities["B"] is None and out.label_probabilities["C"] is None
    assert out.label_probabilities["A"] is not None
    assert [f.code for f in out.findings] == ["label.a"]


def test_softmax_with_a_normal_label() -> None:
    head = ClassifierHead(
        labels=("normal", "abnormal"), activation="softmax", normal_labels=frozenset({"normal"})
    )

    [out] = head.interpret(np.array([3.0, 0.0]))

    assert sum(v for v in out.label_probabilities.values() if v is not None) == pytest.approx(1.0)
    assert out.findings == []
    assert out.risk_score == round(100 * out.label_probabilities["abnormal"])  # type: ignore[operator]


def test_per_label_bands_override_the_defaults() -> None:
    head = ClassifierHead(labels=("A", "B"), per_label_bands={"B": (SeverityBand(0.2, Severity.CRITICAL),)})

    [out] = head.interpret(np.array([_logit(0.3), _logit(0.3)]))

    assert [(f.code, f.severity) for f in out.findings] == [("label.b", Severity.CRITICAL)]


def test_batches_give_one_output_per_row() -> None:
    head = ClassifierHead(labels=("A",))

    assert len(head.interpret(np.zeros((4, 1)))) == 4


def test_output_of_the_wrong_width_or_not_finite_is_an_ai_error() -> None:
    head = ClassifierHead(labels=("A", "B"))

    with pytest.raises(AIError):
        head.interpret(np.zeros((1, 3)))
    with pytest.raises(AIError):
        head.interpret(np.array([[np.nan, 0.0]]))


def test_inconsistent_heads_are_unavailable() -> None:
    with pytest.raises(ProviderUnavailable):
        ClassifierHead(labels=())
    with pytest.raises(ProviderUnavailable):
        ClassifierHead(labels=("A", "B"), operating_points=(0.5,))
    with pytest.raises(ProviderUnavailable):
        ClassifierHead(labels=("A",), bands=(SeverityBand(1.5, Severity.LOW),))
