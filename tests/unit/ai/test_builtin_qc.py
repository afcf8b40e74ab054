"""The builtin provider measures image quality from the pixels and never claims a pathology."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest

from irmsia.ai.base import ImageInput
from irmsia.ai.builtin import NO_DIAGNOSIS, BuiltinQCProvider
from irmsia.ai.inputs import AnalysisContext, image_input
from irmsia.ai.qc import noise_sigma
from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool
from irmsia.ai.schema import AnalysisResult, Severity
from tests.factories import make_ct, make_multiframe_us
from tests.unit.ai.conftest import FIXED_NOW, chest_phantom, cr_input

# Words a quality-control tool must never produce: it does not look for disease.
PATHOLOGY_WORDS = re.compile(
    r"pneumo|effusion|nodule|mass\b|lesion|tumou?r|cancer|malignan|fracture|cardiomegaly|opacit|"
    r"consolidation|atelectasis|edema|oedema|infiltrat|emphysema|fibrosis|hernia|disease|patholog|abnormal",
    re.IGNORECASE,
)


@pytest.fixture
def runner() -> Iterator[AnalysisRunner]:
    built = AnalysisRunner(
        ProviderPool({"builtin": BuiltinQCProvider}), Router("builtin"), clock=lambda: FIXED_NOW
    )
    yield built
    built.close()


def _codes(result: AnalysisResult, severity_at_least: Severity = Severity.LOW) -> dict[str, Severity]:
    order = list(Severity)
    return {
        f.code or "": f.severity
        for f in result.findings
        if order.index(f.severity) >= order.index(severity_at_least)
    }


def _assert_no_pathology(result: AnalysisResult) -> None:
    texts = [f.description for f in result.findings] + result.recommendations
    texts += [result.suggested_diagnosis or "", *result.label_probabilities]
    for text in texts:
        assert not PATHOLOGY_WORDS.search(text), text
    assert result.suggested_diagnosis == NO_DIAGNOSIS


def _analyze(runner: AnalysisRunner, image: ImageInput) -> AnalysisResult:
    result = runner.analyze_image(image)
    assert result.status == "ok"
    _assert_no_pathology(result)
    return result


def test_a_clean_chest_like_image_has_no_quality_problem(runner: AnalysisRunner) -> None:
    result = _analyze(runner, cr_input(chest_phantom()))

    assert _codes(result) == {}
    assert result.risk_score == 0
    assert {f.code for f in result.findings} >= {
        "qc.blank",
        "qc.exposure",
        "qc.contrast",
        "qc.noise",
        "qc.clipping",
        "qc.collimation",
        "qc.inverted",
    }
    assert all(f.value is not None and f.unit for f in result.findings)


def test_a_blank_image_is_critical(runner: AnalysisRunner) -> None:
    result = _analyze(runner, cr_input(np.full((256, 256), 1000, dtype=np.uint16)))

    assert _codes(result) == {"qc.blank": Severity.CRITICAL}
    assert result.risk_score is not None and result.risk_score >= 90


def test_a_saturated_image_reports_clipping(runner: AnalysisRunner) -> None:
    stored = chest_phantom()
    stored[150:] = 4095

    result = _analyze(runner, cr_input(stored))

    codes = _codes(result)
    assert codes["qc.clipping"] is Severity.HIGH
    clipping = next(f for f in result.findings if f.code == "qc.clipping")
    assert clipping.value == pytest.approx(100 * 106 / 256, abs=1.0)


def test_an_inverted_chest_like_image_is_flagged(runner: AnalysisRunner) -> None:
    result = _analyze(runner, cr_input(4095 - chest_phantom()))

    assert _codes(result) == {"qc.inverted": Severity.MODERATE}
    assert any("MONOCHROME" in r for r in result.recommendations)


def test_the_renderer_handles_monochrome1_so_a_correct_file_is_not_flagged(runner: AnalysisRunner) -> None:
    result = _analyze(runner, cr_input(4095 - chest_phantom(), PhotometricInterpretation="MONOCHROME1"))

    assert "qc.inverted" not in _codes(result)


def test_a_low_contrast_image_is_flagged_whatever_the_window(runner: AnalysisRunner) -> None:
    phantom = chest_phantom(noise=0.0).astype(np.float64)
    stored = np.rint(2000 + (phantom - 300) / 2700 * 40).astype(np.uint16)

    result = _analyze(runner, cr_input(stored))

    assert _codes(result)["qc.contrast"] is Severity.MODERATE
    contrast = next(f for f in result.findings if f.code == "qc.contrast")
    assert contrast.unit == "% of stored range" and contrast.value is not None and contrast.value < 3


def test_a_noisy_image_is_flagged_and_the_clean_one_is_not(runner: AnalysisRunner) -> None:
    clean = chest_phantom()
    noisy = np.clip(clean + np.random.default_rng(3).normal(0, 400, clean.shape), 0, 4095).astype(np.uint16)

    noisy_result = _analyze(runner, cr_input(noisy))
    clean_result = _analyze(runner, cr_input(clean))

    assert noisy_result.findings and _codes(noisy_result)["qc.noise"] in (Severity.MODERATE, Severity.HIGH)
    assert "qc.noise" not in _codes(clean_result)


def test_a_tightly_collimated_radiograph_is_flagged(runner: AnalysisRunner) -> None:
    stored = chest_phantom()
    stored[:50] = 4000
    stored[-50:] = 4000

    result = _analyze(runner, cr_input(stored))

    assert _codes(result)["qc.collimation"] in (Severity.LOW, Severity.MODERATE)
    assert "qc.inverted" not in _codes(result)


def test_ct_values_without_rescale_are_flagged(runner: AnalysisRunner) -> None:
    ds = make_ct(rows=256, columns=256)
    ds.RescaleIntercept = 0  # stored 0..2000 now read as HU: a broken rescale

    result = _analyze(runner, image_input(ds, with_modality=True))

    assert _codes(result).get("qc.hu_range") is Severity.MODERATE


def test_a_correct_ct_slice_has_values_in_the_hounsfield_scale(runner: AnalysisRunner) -> None:
    result = _analyze(runner, image_input(make_ct(rows=256, columns=256), with_modality=True))

    hu = next(f for f in result.findings if f.code == "qc.hu_range")
    assert hu.severity is Severity.NORMAL
    assert "qc.clipping" not in {f.code for f in result.findings}  # CT windows clip by design


def test_a_radiograph_stored_in_colour_is_flagged(runner: AnalysisRunner) -> None:
    image = image_input(make_multiframe_us(rows=256, columns=256), AnalysisContext(modality="CR"))

    result = _analyze(runner, image)

    assert _codes(result).get("qc.colour") is Severity.MODERATE


def test_a_small_matrix_is_noted(runner: AnalysisRunner) -> None:
    result = _analyze(runner, cr_input(chest_phantom(128)))

    assert _codes(result).get("qc.matrix") is Severity.LOW


def test_the_noise_estimate_matches_known_gaussian_noise() -> None:
    rng = np.random.default_rng(11)
    ramp = np.tile(np.linspace(0, 200, 300, dtype=np.float32), (300, 1))

    estimate = noise_sigma(ramp + rng.normal(0, 5.0, ramp.shape).astype(np.float32))

    assert estimate == pytest.approx(5.0, rel=0.1)
    assert noise_sigma(ramp) == pytest.approx(0.0, abs=1e-3)


# --- exposure ---------------------------------------------------------------------------------

FULL_WINDOW = {"WindowCenter": 2048, "WindowWidth": 4096}  # the whole 12-bit range, shown as is


def _exposure(result: AnalysisResult):  # type: ignore[no-untyped-def]
    return next(f for f in result.findings if f.code == "qc.exposure")


def test_an_under_exposed_radiograph_is_flagged_as_dark(runner: AnalysisRunner) -> None:
    stored = (chest_phantom().astype(np.float64) * 0.1).astype(np.uint16)  # a tenth of the signal

    result = _analyze(runner, cr_input(stored, **FULL_WINDOW))

    exposure = _exposure(result)
    assert exposure.severity is Severity.MODERATE
    assert "dark" in exposure.description.lower()
    assert exposure.value is not None and exposure.value < 35
    assert any("exposure" in r.lower() for r in result.recommendations)


def test_an_over_exposed_radiograph_is_flagged_as_bright(runner: AnalysisRunner) -> None:
    phantom = chest_phantom().astype(np.float64)
    stored = np.rint(4095 - (4095 - phantom) * 0.1).astype(np.uint16)  # everything near full signal

    result = _analyze(runner, cr_input(stored, **FULL_WINDOW))

    exposure = _exposure(result)
    assert exposure.severity is Severity.MODERATE
    assert "bright" in exposure.description.lower()
    assert exposure.value is not None and exposure.value > 220


def test_the_same_phantom_well_exposed_is_within_range(runner: AnalysisRunner) -> None:
    result = _analyze(runner, cr_input(chest_phantom(), **FULL_WINDOW))

    exposure = _exposure(result)
    assert exposure.severity is Severity.NORMAL
    assert exposure.value is not None and 35 <= exposure.value <= 220


# --- modality consistency: body part and physical size -----------------------------------------


@pytest.mark.parametrize(
    ("modality", "body_part"),
    [("MG", "CHEST"), ("IO", "KNEE"), ("PX", "ABDOMEN"), ("OPT", "HAND")],
)
def test_a_body_part_implausible_for_the_modality_is_flagged(
    runner: AnalysisRunner, modality: str, body_part: str
) -> None:
    result = _analyze(runner, cr_input(chest_phantom(), Modality=modality, BodyPartExamined=body_part))

    finding = next(f for f in result.findings if f.code == "qc.body_part")
    assert finding.severity is Severity.LOW
    assert body_part in finding.description and modality in finding.description
    assert any("Body Part Examined" in r for r in result.recommendations)


@pytest.mark.parametrize(
    ("modality", "body_part"),
    [("MG", "BREAST"), ("IO", "TOOTH"), ("PX", "JAW"), ("OPT", "EYE"), ("CR", "KNEE"), ("MG", "")],
)
def test_a_plausible_or_unchecked_body_part_is_not_flagged(
    runner: AnalysisRunner, modality: str, body_part: str
) -> None:
    result = _analyze(runner, cr_input(chest_phantom(), Modality=modality, BodyPartExamined=body_part))

    assert "qc.body_part" not in {f.code for f in result.findings}


def _size_finding(result: AnalysisResult):  # type: ignore[no-untyped-def]
    return next((f for f in result.findings if f.code == "qc.pixel_spacing"), None)


def test_a_ct_whose_pixel_spacing_makes_it_millimetres_wide_is_flagged(runner: AnalysisRunner) -> None:
    ds = make_ct(rows=256, columns=256)
    ds.PixelSpacing = [0.01, 0.01]  # 2.56 mm across: spacing probably written in cm

    result = _analyze(runner, image_input(ds, with_modality=True))

    finding = _size_finding(result)
    assert finding is not None and finding.severity is Severity.LOW
    assert finding.unit == "mm" and finding.value == pytest.approx(2.56)
    assert "CT" in finding.description and "Pixel Spacing" in finding.description


def test_a_ct_with_a_usual_field_of_view_is_not_flagged(runner: AnalysisRunner) -> None:
    ds = make_ct(rows=256, columns=256)
    ds.PixelSpacing = [1.5, 1.5]  # 384 mm

    assert _size_finding(_analyze(runner, image_input(ds, with_modality=True))) is None


def test_a_radiograph_metres_wide_is_flagged_and_imager_spacing_is_preferred(runner: AnalysisRunner) -> None:
    wrong = _analyze(runner, cr_input(chest_phantom(), ImagerPixelSpacing=[10.0, 10.0]))  # 2.56 m
    right = _analyze(
        runner, cr_input(chest_phantom(), ImagerPixelSpacing=[1.4, 1.4], PixelSpacing=[10.0, 10.0])
    )

    finding = _size_finding(wrong)
    assert finding is not None and finding.value == pytest.approx(2560.0)
    assert _size_finding(right) is None  # 358 mm at the detector: Imager Pixel Spacing wins


def test_a_mammogram_the_size_of_a_dental_film_is_flagged(runner: AnalysisRunner) -> None:
    result = _analyze(
        runner,
        cr_input(chest_phantom(), Modality="MG", BodyPartExamined="BREAST", ImagerPixelSpacing=[0.1, 0.1]),
    )  # 25.6 mm: a mammography detector is 180 mm or more

    finding = _size_finding(result)
    assert finding is not None and finding.value == pytest.approx(25.6)
    assert "qc.body_part" not in {f.code for f in result.findings}


def test_a_non_positive_pixel_spacing_is_reported(runner: AnalysisRunner) -> None:
    result = _analyze(runner, cr_input(chest_phantom(), PixelSpacing=[0.0, 0.2]))

    finding = _size_finding(result)
    assert finding is not None and "not positive" in finding.description


def test_without_a_spacing_or_a_range_for_the_modality_size_is_not_assessed(runner: AnalysisRunner) -> None:
    no_spacing = _analyze(runner, cr_input(chest_phantom()))
    ultrasound = _analyze(runner, cr_input(chest_phantom(), Modality="US", PixelSpacing=[50.0, 50.0]))

    assert _size_finding(no_spacing) is None
    assert _size_finding(ultrasound) is None
