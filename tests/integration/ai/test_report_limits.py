"""Whatever a valid AI result holds fits a report: its limits are the result schema's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from irmsia.ai.schema import AnalysisResult, Finding, Provenance
from irmsia.bootstrap import Container
from irmsia.usecases.ingest import IncomingFile
from tests.factories import make_cr, to_bytes
from tests.support import CLI_CTX


@pytest.mark.parametrize("fmt", ["json", "pdf", "sr", "fhir"])
def test_a_result_at_the_schemas_limits_renders_in_every_format(container: Container, fmt: str) -> None:
    (item,) = container.ingest.submit(CLI_CTX, [IncomingFile(data=[to_bytes(make_cr())], label="1")]).files
    image_id, study_id = item.result["image_id"], item.result["study_id"]
    longest = AnalysisResult(
        status="ok",
        findings=[Finding(description="d" * 500, location="l" * 200, confidence=0.5, severity="moderate")],
        risk_score=40,
        suggested_diagnosis="s" * 500,
        recommendations=["r" * 500] * 3,
        report_text="n" * 20_000,
        model_used="m" * 200,
        provenance=Provenance(provider="p" * 64, model="m" * 200, version="v" * 64),
        processing_time=0.1,
        timestamp=datetime(2026, 3, 1, tzinfo=UTC),
    )
    container.analyze.store(CLI_CTX, image_id, longest)
    rendered = container.reports.render(CLI_CTX, study_id, fmt)  # type: ignore[arg-type]
    assert rendered.content
    assert rendered.report.images[0].findings[0].description == "d" * 500
