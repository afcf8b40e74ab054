"""The PDF builder: parses, says what state the report is in, shows every part, leaks nothing."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from importlib import resources

import numpy as np
import pytest
from pypdf import PdfReader

from irmsia.domain.png import decode_png
from irmsia.errors import InvalidRequest
from irmsia.reports.model import DISCLAIMER, SIMULATED_NOTE, UNSIGNED_NOTE, Report, status_banner
from irmsia.reports.pdf import PdfFonts, build_pdf, bundled_fonts
from tests.factories import PHI, PHI_DATES, contains_phi
from tests.unit.reports.conftest import EDITED, LEDGER_HASH

MakeReport = Callable[..., Report]
A4_POINTS = (595.28, 841.89)


def _text(pdf: bytes) -> str:
    """All pages' text, with layout line breaks folded to spaces."""
    reader = PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


def _squeezed(text: str) -> str:
    # Table cells wrap long UIDs and digests; compare them without the inserted breaks.
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def preliminary_pdf(preliminary: Report) -> bytes:
    return build_pdf(preliminary)


@pytest.fixture(scope="module")
def final_pdf(final: Report) -> bytes:
    return build_pdf(final)


def test_pdf_parses_with_a4_pages(preliminary_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(preliminary_pdf))
    assert len(reader.pages) >= 1
    for page in reader.pages:
        assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(A4_POINTS, abs=0.5)
    assert reader.metadata is not None
    assert reader.metadata.title == "Diagnostic report rep-0001"


def test_preliminary_pdf_says_not_for_clinical_use(preliminary_pdf: bytes) -> None:
    text = _text(preliminary_pdf)
    assert "PRELIMINARY — AI-GENERATED, NOT FOR CLINICAL USE" in text
    assert "rep-0001" in text
    assert UNSIGNED_NOTE in text
    assert "FINAL" not in text


def test_final_pdf_names_the_signer_and_the_date(final: Report, final_pdf: bytes) -> None:
    text = _text(final_pdf)
    assert "FINAL — signed by dr.house on 2026-03-02 14:30 UTC" in text
    assert "Confirmed as proposed" in text
    assert "NOT FOR CLINICAL USE" not in text
    assert status_banner(final) in text


def test_rejected_pdf_says_rejected(rejected: Report) -> None:
    text = _text(build_pdf(rejected))
    assert "REJECTED — by dr.house on 2026-03-02 14:30 UTC" in text
    assert "Checked against prior imaging." in text


def test_edited_pdf_prints_the_clinicians_conclusion(edited: Report) -> None:
    text = _text(build_pdf(edited))
    assert "Confirmed with edits" in text
    assert EDITED in text


def test_pdf_shows_the_study_block(preliminary: Report, preliminary_pdf: bytes) -> None:
    text = _text(preliminary_pdf)
    study = preliminary.study
    assert preliminary.patient_pseudonym in text
    assert study.study_date is not None and study.study_date.isoformat() in text
    assert study.accession_pseudonym is not None and study.accession_pseudonym in text
    assert "Modalities CT" in text
    assert study.study_instance_uid in _squeezed(text)


def test_pdf_shows_every_finding_score_and_recommendation(
    preliminary: Report, preliminary_pdf: bytes
) -> None:
    text = _text(preliminary_pdf)
    assert "Focal opacity right lower lobe moderate 87%" in text
    assert "Pleural effusion — low 12%" in text
    assert "Risk score 62.5 / 100" in text
    assert "Community-acquired pneumonia" in text
    assert "Follow-up CT in 6 weeks" in text
    assert "pneumonia 81.0%" in text
    assert text.count("Image 1 of 2") == 1 and text.count("Image 2 of 2") == 1
    squeezed = _squeezed(text)
    for image in preliminary.images:
        assert image.sop_instance_uid in squeezed
        assert image.series_instance_uid in squeezed


def test_pdf_shows_the_provenance(preliminary: Report, preliminary_pdf: bytes) -> None:
    text = _text(preliminary_pdf)
    provenance = preliminary.images[0].provenance
    assert f"Provider {provenance.provider}" in text
    assert f"Model {provenance.model}" in text
    assert f"Version {provenance.version}" in text
    assert provenance.weights_sha256 is not None and provenance.weights_sha256 in _squeezed(text)


def test_pdf_carries_the_ai_disclaimer(preliminary_pdf: bytes, final_pdf: bytes) -> None:
    assert DISCLAIMER in _text(preliminary_pdf)
    assert DISCLAIMER in _text(final_pdf)


def test_every_page_has_a_footer_with_report_id_ledger_and_page_number(final_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(final_pdf))
    pages = len(reader.pages)
    assert pages >= 2
    for number, page in enumerate(reader.pages, start=1):
        text = " ".join(page.extract_text().split())
        assert "Report rep-0001 · FINAL" in text
        assert f"Page {number} of {pages}" in text
        assert f"Ledger #17 · SHA-256 {LEDGER_HASH}" in text


def test_unregistered_report_says_so_in_the_footer(preliminary_pdf: bytes) -> None:
    assert "Ledger: not yet registered" in _text(preliminary_pdf)


def test_pdf_embeds_every_thumbnail(preliminary: Report, preliminary_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(preliminary_pdf))
    embedded = [image.image for page in reader.pages for image in page.images]
    assert len(embedded) == len(preliminary.images)
    for image, result in zip(embedded, preliminary.images, strict=True):
        assert result.thumbnail_png is not None
        original = decode_png(result.thumbnail_png)
        assert image is not None
        assert image.size == (original.shape[1], original.shape[0])
        assert np.array_equal(np.asarray(image.convert("L")), original)


def test_report_without_thumbnails_still_renders(make_report: MakeReport) -> None:
    pdf = build_pdf(make_report(1, with_thumbnails=False))
    reader = PdfReader(io.BytesIO(pdf))
    assert sum(len(page.images) for page in reader.pages) == 0
    assert "Focal opacity" in _text(pdf)


def test_unicode_text_is_rendered_and_unknown_glyphs_replaced_quietly(
    make_report: MakeReport, caplog: pytest.LogCaptureFixture
) -> None:
    report = make_report(1)
    image = report.images[0].model_copy(update={"narrative": "Ελληνικά Кириллица Opacité 漢字 ok"})
    caplog.set_level(logging.DEBUG)
    text = _text(build_pdf(report.model_copy(update={"images": (image,)})))
    assert "Ελληνικά Кириллица Opacité" in text
    assert "\ufffd\ufffd ok" in text
    assert "漢" not in text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_simulated_results_are_labelled(make_report: MakeReport) -> None:
    text = _text(build_pdf(make_report(1, simulated=True)))
    assert "Contains SIMULATED results" in text
    assert "img-0000 · SIMULATED" in text
    assert SIMULATED_NOTE in text


def test_pdf_contains_no_phi(preliminary_pdf: bytes, final_pdf: bytes) -> None:
    for pdf in (preliminary_pdf, final_pdf):
        text = _text(pdf)
        assert contains_phi(text) == []
        assert contains_phi(pdf) == []
        # The original dates of the source slices (the report only holds shifted ones).
        for day in PHI_DATES:
            assert f"{day[:4]}-{day[4:6]}-{day[6:]}" not in text
        assert PHI["PatientName"].split("^")[0] not in text


def test_same_report_gives_the_same_bytes(preliminary: Report, preliminary_pdf: bytes) -> None:
    assert build_pdf(preliminary) == preliminary_pdf


def test_report_without_images_is_refused(make_report: MakeReport) -> None:
    with pytest.raises(InvalidRequest):
        build_pdf(Report.model_validate(make_report(1).model_dump() | {"images": ()}))


def test_undecodable_thumbnail_is_refused_without_a_bare_error(make_report: MakeReport) -> None:
    report = make_report(1)
    broken = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00\x00\x00\x10" * 2 + b"garbage" * 10
    image = report.images[0].model_copy(update={"thumbnail_png": broken})
    with pytest.raises(InvalidRequest) as caught:
        build_pdf(report.model_copy(update={"images": (image,)}))
    assert "img-0000" in str(caught.value)


def test_bundled_fonts_and_their_licence_ship_in_the_package() -> None:
    fonts = bundled_fonts()
    assert fonts.regular.is_file() and fonts.bold.is_file()
    licence = resources.files("irmsia.reports").joinpath("fonts", "LICENSE-DejaVu.txt")
    assert "Bitstream Vera" in licence.read_text(encoding="utf-8")


def test_fonts_can_be_injected(preliminary: Report, preliminary_pdf: bytes) -> None:
    bundled = bundled_fonts()
    same_faces = PdfFonts(regular=bundled.bold, bold=bundled.bold)
    pdf = build_pdf(preliminary, fonts=same_faces)
    assert pdf != preliminary_pdf
    assert "Focal opacity" in _text(pdf)
