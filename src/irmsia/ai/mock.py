"""The ``mock`` provider: deterministic, clearly simulated output for development and tests.

Output is seeded from a SHA-256 of the image's pixels and metadata, so the same image always
gets the same result and different images usually differ. Every result is ``simulated``; every
finding says it is simulated. Nothing here measures or means anything.
"""

from __future__ import annotations

import hashlib
import random
from typing import ClassVar

import numpy as np

from irmsia.ai.base import ImageMeta, InputSpec, ModelInfo, PreparedImage, Provider, ProviderOutput
from irmsia.ai.schema import AnalysisResult, Finding, Severity

_SEVERITIES = (Severity.NORMAL, Severity.LOW, Severity.MODERATE, Severity.HIGH)
_REGIONS = ("upper left", "upper right", "centre", "lower left", "lower right")


def _seed(image: PreparedImage) -> int:
    digest = hashlib.sha256()
    digest.update(image.tensor.tobytes())
    digest.update(repr(image.tensor.shape).encode())
    meta = image.meta
    digest.update(f"{meta.modality}|{meta.body_part}|{meta.additional_context}".encode())
    return int.from_bytes(digest.digest()[:8], "big")


class MockProvider(Provider):
    """Simulated findings, seeded from the image; for demos and tests only."""

    name: ClassVar[str] = "mock"
    simulated: ClassVar[bool] = True
    input_spec = InputSpec(representation="display", channels=None, dtype="uint8")
    model_info = ModelInfo(model="irmsia-mock", version="1")

    def predict(self, image: PreparedImage) -> ProviderOutput:
        rng = random.Random(_seed(image))  # noqa: S311 - reproducible fake output, not security
        count = rng.randint(0, 3)
        findings = [
            Finding(
                description=f"Simulated finding {index + 1} (mock provider, not a real analysis)",
                location=rng.choice(_REGIONS),
                confidence=round(rng.uniform(0.5, 0.99), 3),
                severity=rng.choice(_SEVERITIES),
                code=f"mock.finding_{index + 1}",
            )
            for index in range(count)
        ]
        return ProviderOutput(
            findings=findings,
            label_probabilities={"simulated": round(rng.random(), 3)},
            suggested_diagnosis="Simulated output (mock provider): no analysis was performed",
            recommendations=("Configure a real AI provider; mock output is simulated",),
        )


class MockReportWriter:
    """A report writer that restates the findings deterministically (tests and demos)."""

    name = "mock"
    remote = False
    model_info = ModelInfo(model="irmsia-mock-writer", version="1")

    def write_report(self, result: AnalysisResult, meta: ImageMeta, display: np.ndarray | None) -> str:
        """One sentence per finding, prefixed with the modality; simulated wording."""
        lines = [f"Simulated report for a {meta.modality or 'medical'} image."]
        lines += [f"- {f.description} ({f.severity.value})" for f in result.findings]
        if not result.findings:
            lines.append("- No findings were reported.")
        return "\n".join(lines)
