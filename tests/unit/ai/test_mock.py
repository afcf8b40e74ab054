"""The mock provider is deterministic and clearly simulated."""

from __future__ import annotations

import numpy as np

from irmsia.ai.base import ImageInput, ImageMeta
from irmsia.ai.mock import MockProvider, MockReportWriter
from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool
from tests.factories import make_cr, make_ct
from tests.unit.ai.conftest import FIXED_NOW


def _runner() -> AnalysisRunner:
    return AnalysisRunner(
        ProviderPool({"mock": MockProvider}), Router("mock"), clock=lambda: FIXED_NOW, timer=lambda: 0.0
    )


def test_the_same_image_gets_the_same_result_and_others_differ() -> None:
    runner = _runner()
    try:
        ds = make_ct(seed=5)
        first, again = runner.analyze(ds), runner.analyze(ds)
        others = {runner.analyze(make_ct(seed=seed)).sha256() for seed in range(6)}
    finally:
        runner.close()

    assert first.sha256() == again.sha256()
    assert len(others) > 1


def test_mock_results_are_marked_simulated_everywhere() -> None:
    runner = _runner()
    try:
        results = [runner.analyze(make_cr(seed=seed)) for seed in range(5)]
    finally:
        runner.close()

    for result in results:
        assert result.simulated is True and result.ai_generated is True
        assert result.suggested_diagnosis is not None and "Simulated" in result.suggested_diagnosis
        assert all("Simulated" in f.description for f in result.findings)
    assert any(result.findings for result in results)


def test_the_mock_writer_restates_findings() -> None:
    runner = AnalysisRunner(
        ProviderPool({"mock": MockProvider}),
        Router("mock"),
        clock=lambda: FIXED_NOW,
        report_writer=MockReportWriter(),
    )
    image = ImageInput(display=np.full((8, 8), 9, np.uint8), meta=ImageMeta(modality="DX"))
    try:
        result = runner.analyze_image(image)
    finally:
        runner.close()

    assert result.report_text is not None and result.report_text.startswith(
        "Simulated report for a DX image."
    )
