"""Turn a classifier's raw scores into labelled probabilities and findings (pure numpy).

Shared by the ONNX, torchxrayvision and Hugging Face providers so that every image classifier
reports the same way:

- ``activation`` "sigmoid" (multi-label), "softmax" (one class) or "none" (already probabilities);
- ``operating_points`` (multi-label): per-label thresholds rescaled to 0.5, piecewise linearly, as
  torchxrayvision does with its ``op_threshs``, so one set of severity bands fits every label;
  a NaN operating point, or an empty label, marks a label the weights never learned: it is
  reported as not available (None), never as a probability;
- ``bands``: the probability at which a label becomes a finding, and with what severity
  (``per_label_bands`` override them); ``normal_labels`` ("No Finding", "normal") never become
  findings and do not add to the risk score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from irmsia.ai.base import ProviderOutput
from irmsia.ai.schema import Finding, Severity
from irmsia.errors import AIError, ProviderUnavailable

Activation = Literal["sigmoid", "softmax", "none"]
RECOMMENDATION = "Model output for research use; a qualified reader must review the image."


@dataclass(frozen=True)
class SeverityBand:
    """From ``min_probability`` upwards (until the next band) a label is a finding of ``severity``."""

    min_probability: float
    severity: Severity


DEFAULT_BANDS = (
    SeverityBand(0.5, Severity.LOW),
    SeverityBand(0.7, Severity.MODERATE),
    SeverityBand(0.9, Severity.HIGH),
)


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:56] or "label"


@dataclass(frozen=True)
class ClassifierHead:
    """How to read one classifier's output; see the module docstring.

    ``labels`` name the output columns in order; ``display_names`` (same length) name columns
    whose label is empty, so an unavailable label still appears by name. Raises
    ``ProviderUnavailable`` when the lengths disagree (a broken model description).
    """

    labels: tuple[str, ...]
    activation: Activation = "sigmoid"
    operating_points: tuple[float, ...] | None = None
    bands: tuple[SeverityBand, ...] = DEFAULT_BANDS
    per_label_bands: Mapping[str, tuple[SeverityBand, ...]] = field(default_factory=dict)
    normal_labels: frozenset[str] = frozenset()
    display_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.labels:
            raise ProviderUnavailable("the model declares no labels")
        for other, what in ((self.operating_points, "operating points"), (self.display_names, "names")):
            if other is not None and len(other) != len(self.labels):
                raise ProviderUnavailable(f"the model's {what} do not match its labels")
        for bands in (self.bands, *self.per_label_bands.values()):
            if not bands or any(not 0.0 <= band.min_probability <= 1.0 for band in bands):
                raise ProviderUnavailable("severity bands need probabilities in 0..1")

    def names(self) -> list[str]:
        """The name reported for each column (``display_names`` fills empty labels)."""
        names = []
        for index, label in enumerate(self.labels):
            fallback = self.display_names[index] if self.display_names else ""
            names.append(label or fallback or f"output {index}")
        return names

    def available(self) -> np.ndarray:
        """Boolean mask of the columns the weights cover."""
        mask = np.array([bool(label) for label in self.labels])
        if self.operating_points is not None:
            mask &= ~np.isnan(np.asarray(self.operating_points, dtype=np.float64))
        return mask

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Raw scores (N, labels) → probabilities in 0..1 (NaN where not available).

        Raises ``AIError`` when the output's width differs from the labels or is not finite.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim == 1:
            scores = scores[None, :]
        if scores.ndim != 2 or scores.shape[1] != len(self.labels):
            raise AIError("the model's output does not match its labels")
        if not np.all(np.isfinite(scores)):
            raise AIError("the model's output is not finite")
        if self.activation == "sigmoid":
            probs = 1.0 / (1.0 + np.exp(-np.clip(scores, -80.0, 80.0)))
        elif self.activation == "softmax":
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs = shifted / shifted.sum(axis=1, keepdims=True)
        else:
            probs = np.clip(scores, 0.0, 1.0)
        if self.operating_points is not None:
            probs = _rescale_to_operating_points(probs, np.asarray(self.operating_points, dtype=np.float64))
        probs = probs.copy()
        probs[:, ~self.available()] = np.nan
        return probs

    def interpret(self, scores: np.ndarray) -> list[ProviderOutput]:
        """One ``ProviderOutput`` per row of raw scores."""
        return [self._one(row) for row in self.probabilities(scores)]

    def _band(self, label: str, probability: float) -> Severity | None:
        bands = sorted(self.per_label_bands.get(label, self.bands), key=lambda b: b.min_probability)
        chosen = None
        for band in bands:
            if probability >= band.min_probability:
                chosen = band.severity
        return chosen

    def _one(self, probs: np.ndarray) -> ProviderOutput:
        names = self.names()
        label_probabilities: dict[str, float | None] = {}
        findings: list[Finding] = []
        for name, label, probability in zip(names, self.labels, probs, strict=True):
            if math.isnan(probability):
                label_probabilities[name] = None
                continue
            value = round(float(probability), 6)
            label_probabilities[name] = value
            if label in self.normal_labels:
                continue
            severity = self._band(label, value)
            if severity is not None:
                findings.append(
                    Finding(
                        description=f"{name}: model score above its threshold",
                        confidence=value,
                        severity=severity,
                        code=f"label.{_slug(name)}",
                        value=value,
                        unit="probability",
                    )
                )
        findings.sort(key=lambda f: -f.confidence)
        abnormal = [p for label, p in zip(self.labels, probs, strict=True) if label not in self.normal_labels]
        top = max((p for p in abnormal if not math.isnan(p)), default=0.0)
        suggested = (
            f"Model output: {findings[0].description.split(':')[0]} (not a diagnosis)"
            if findings
            else "Model output: no label above its threshold (not a diagnosis)"
        )
        available = [p for p in probs if not math.isnan(p)]
        return ProviderOutput(
            findings=findings,
            label_probabilities=label_probabilities,
            risk_score=round(100 * float(top)),
            suggested_diagnosis=suggested,
            confidence=round(float(max(available)), 6) if available else None,
            recommendations=(RECOMMENDATION,),
        )


def _rescale_to_operating_points(probs: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map each label's operating point to 0.5, linearly below and above it (NaN points pass)."""
    out = probs.copy()
    valid = ~np.isnan(points) & (points > 0) & (points < 1)
    if not valid.any():
        return out
    p = probs[:, valid]
    t = np.broadcast_to(points[valid], p.shape)
    out[:, valid] = np.where(p < t, p / (2 * t), 1.0 - (1.0 - p) / (2 * (1.0 - t)))
    return out
