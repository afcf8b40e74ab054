"""Image quality control measured from the pixels (pure numpy): what the ``builtin`` provider reports.

Every check returns a ``Finding`` with the number it measured, in the unit it names, and a
severity that is ``normal`` when nothing is wrong. The checks say nothing about anatomy or
disease; they describe the image as an image:

- blank: the display image has (almost) no variation;
- exposure: mean display level (0..255), too dark or too bright;
- contrast: display standard deviation, and for stored images of more than 8 bits the share of
  the stored range the values use (a tiny share means little real contrast, whatever the window);
- noise: standard deviation of the noise from the median absolute response of a Laplacian-type
  kernel (J. Immerkær's mask, scaled by 1.4826 / 6), which edges barely move;
- clipping: share of display pixels at 0 and at 255 (not for CT, whose windows clip by design);
- inverted grey scale (projection radiographs): the border brighter than the centre, a sign the
  Photometric Interpretation is wrong;
- collimation / field of view (projection radiographs): share of the image in uniform border lines;
- consistency: CT values outside the Hounsfield scale or apparently un-rescaled, colour
  radiographs, small matrices, a body part not plausible for the modality
  (``PLAUSIBLE_BODY_PARTS``), and a physical size (matrix x pixel spacing) not plausible for the
  modality (``PLAUSIBLE_SIDE_MM``): these say the header is probably wrong, nothing about the patient.

Thresholds are deliberately lenient: each finding is a prompt to look, not a verdict.
"""

from __future__ import annotations

import numpy as np

from irmsia.ai.base import ImageMeta
from irmsia.ai.schema import Finding, Severity

PROJECTION = frozenset({"CR", "DX", "DR", "RG", "MG", "PX", "IO", "RF"})
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SAMPLE = 1 << 18  # pixels sampled for medians and percentiles
_NOISE_SCALE = 1.4826 / 6.0  # MAD → sigma, and the mask's gain for white noise (sqrt(sum k^2) = 6)
_UNIFORM_LINE_STD = 1.0  # display levels: a row/column this flat counts as uniform border
_DISPLAY_UNIT = "display level (0-255)"

_DENTAL = frozenset({"JAW", "MANDIBLE", "MAXILLA", "TMJ", "TOOTH", "MOUTH", "FACE", "HEAD", "SKULL"})
_EYE = frozenset({"EYE", "ORBIT", "HEAD"})
# Body Part Examined (DICOM PS3.16 Annex L defined terms) plausible for the modalities whose
# anatomy is narrow. Other modalities image almost anything and are not checked, nor is an empty
# body part. A mismatch means the header is probably wrong (a mislabelled series, a default value).
PLAUSIBLE_BODY_PARTS: dict[str, frozenset[str]] = {
    "MG": frozenset({"BREAST"}),  # mammography
    "IO": _DENTAL,  # intra-oral radiography
    "PX": _DENTAL,  # panoramic radiography
    "OP": _EYE,  # ophthalmic photography
    "OPT": _EYE,  # ophthalmic tomography (OCT)
}
_RADIOGRAPHY_MM = (30.0, 1600.0)  # cassettes and detectors 180-430 mm; stitched long-length images ~1500 mm
# (smallest, largest) plausible side in mm of an image (rows x row spacing, columns x column
# spacing), deliberately wide: a side outside it usually means Pixel Spacing is wrong (in cm or
# in µm, or copied from another image), so measurements on the image would be wrong too.
PLAUSIBLE_SIDE_MM: dict[str, tuple[float, float]] = {
    "CT": (30.0, 1000.0),  # reconstruction fields of view ~50 mm (inner ear) to ~700 mm (bore)
    "MR": (10.0, 700.0),  # small surface coils to whole-body fields of view
    "CR": _RADIOGRAPHY_MM,
    "DX": _RADIOGRAPHY_MM,
    "DR": _RADIOGRAPHY_MM,
    "RG": _RADIOGRAPHY_MM,
    "MG": (50.0, 400.0),  # mammography detectors 180 x 240 to about 290 x 380 mm
    "IO": (10.0, 100.0),  # intra-oral sensors ~20 x 30 mm to occlusal films 57 x 76 mm
    "PX": (80.0, 400.0),  # panoramic images ~150 x 300 mm
}


def _f(
    code: str, description: str, severity: Severity, value: float, unit: str, confidence: float = 0.9
) -> Finding:
    return Finding(
        description=description,
        confidence=confidence,
        severity=severity,
        code=f"qc.{code}",
        value=round(float(value), 4),
        unit=unit,
    )


def _sample(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(-1)
    return flat[:: max(1, flat.size // _SAMPLE)]


def grey(display: np.ndarray) -> np.ndarray:
    """The display image as float32 grey levels 0..255 (colour through BT.601 luma)."""
    if display.ndim == 3:
        return display[..., :3].astype(np.float32) @ _LUMA
    return display.astype(np.float32)


def noise_sigma(image: np.ndarray) -> float:
    """Noise standard deviation in ``image``'s units (robust to edges; 0 for tiny images)."""
    if min(image.shape) < 3:
        return 0.0
    x = image.astype(np.float32)
    # The 3x3 mask [[1,-2,1],[-2,4,-2],[1,-2,1]] is separable: [1,-2,1] along both axes.
    rows = x[:-2, :] - 2 * x[1:-1, :] + x[2:, :]
    response = rows[:, :-2] - 2 * rows[:, 1:-1] + rows[:, 2:]
    return float(np.median(np.abs(_sample(response)))) * _NOISE_SCALE


def _uniform_border(image: np.ndarray) -> tuple[float, tuple[int, int, int, int]]:
    """Share of the area in uniform edge lines, and how many lines from top, bottom, left, right."""
    row_flat = image.std(axis=1) < _UNIFORM_LINE_STD
    column_flat = image.std(axis=0) < _UNIFORM_LINE_STD

    def run(flags: np.ndarray) -> int:
        not_flat = np.flatnonzero(~flags)
        return int(not_flat[0]) if not_flat.size else flags.size

    top, bottom = run(row_flat), run(row_flat[::-1])
    left, right = run(column_flat), run(column_flat[::-1])
    rows, columns = image.shape
    inner_rows = max(0, rows - top - bottom)
    inner_columns = max(0, columns - left - right)
    share = 1.0 - (inner_rows * inner_columns) / float(rows * columns)
    return share, (top, bottom, left, right)


def check_blank(g: np.ndarray) -> Finding:
    std = float(g.std())
    low, high = np.percentile(_sample(g), (1, 99))
    if std < 1.0 and high - low < 2.0:
        return _f(
            "blank",
            "Blank or uniform image: no usable grey-level variation",
            Severity.CRITICAL,
            std,
            _DISPLAY_UNIT,
            0.99,
        )
    return _f(
        "blank",
        f"Image is not blank (display standard deviation {std:.1f})",
        Severity.NORMAL,
        std,
        _DISPLAY_UNIT,
    )


def check_exposure(g: np.ndarray) -> Finding:
    mean = float(g.mean())
    if mean < 35:
        return _f(
            "exposure",
            f"Very dark image (mean display level {mean:.0f} of 255)",
            Severity.MODERATE,
            mean,
            _DISPLAY_UNIT,
            0.7,
        )
    if mean > 220:
        return _f(
            "exposure",
            f"Very bright image (mean display level {mean:.0f} of 255)",
            Severity.MODERATE,
            mean,
            _DISPLAY_UNIT,
            0.7,
        )
    return _f(
        "exposure",
        f"Exposure within the expected range (mean display level {mean:.0f} of 255)",
        Severity.NORMAL,
        mean,
        _DISPLAY_UNIT,
    )


def check_contrast(g: np.ndarray, meta: ImageMeta, values: np.ndarray | None) -> Finding:
    std = float(g.std())
    if values is not None and meta.modality == "CT":
        low, high = np.percentile(_sample(values), (0.5, 99.5))
        spread = float(high - low)
        if spread < 50:
            return _f(
                "contrast",
                f"Very low contrast: values span only {spread:.0f} HU",
                Severity.MODERATE,
                spread,
                "HU",
                0.8,
            )
    elif values is not None and meta.bits_stored and meta.bits_stored > 8:
        low, high = np.percentile(_sample(values), (0.5, 99.5))
        share = float(high - low) / float((1 << meta.bits_stored) - 1)
        if share < 0.03:
            return _f(
                "contrast",
                f"Very low contrast: values use {100 * share:.1f}% of the {meta.bits_stored}-bit range",
                Severity.MODERATE,
                100 * share,
                "% of stored range",
                0.8,
            )
    if std < 20:
        return _f(
            "contrast",
            f"Low display contrast (standard deviation {std:.1f})",
            Severity.MODERATE,
            std,
            _DISPLAY_UNIT,
            0.7,
        )
    return _f(
        "contrast",
        f"Contrast adequate (display standard deviation {std:.1f})",
        Severity.NORMAL,
        std,
        _DISPLAY_UNIT,
    )


def check_noise(g: np.ndarray) -> Finding:
    sigma = noise_sigma(g)
    if sigma > 20:
        return _f(
            "noise",
            f"Very noisy image (estimated noise {sigma:.1f} display levels)",
            Severity.HIGH,
            sigma,
            _DISPLAY_UNIT,
            0.8,
        )
    if sigma > 10:
        return _f(
            "noise",
            f"Noisy image (estimated noise {sigma:.1f} display levels)",
            Severity.MODERATE,
            sigma,
            _DISPLAY_UNIT,
            0.7,
        )
    return _f(
        "noise",
        f"Noise acceptable (estimated {sigma:.1f} display levels)",
        Severity.NORMAL,
        sigma,
        _DISPLAY_UNIT,
    )


def check_clipping(g: np.ndarray) -> Finding:
    high = float(np.mean(g >= 254.5))
    low = float(np.mean(g <= 0.5))
    if high > 0.25:
        return _f(
            "clipping",
            f"Saturated: {100 * high:.0f}% of pixels at full white",
            Severity.HIGH,
            100 * high,
            "% of pixels",
            0.9,
        )
    if high > 0.05:
        return _f(
            "clipping",
            f"Clipping: {100 * high:.0f}% of pixels at full white",
            Severity.MODERATE,
            100 * high,
            "% of pixels",
            0.8,
        )
    if low > 0.4:
        return _f(
            "clipping",
            f"Large black area: {100 * low:.0f}% of pixels at full black",
            Severity.LOW,
            100 * low,
            "% of pixels",
            0.6,
        )
    share = 100 * max(high, low)
    return _f(
        "clipping",
        f"No significant clipping (at most {share:.1f}% of pixels at an extreme)",
        Severity.NORMAL,
        share,
        "% of pixels",
    )


def check_inverted(g: np.ndarray, border: tuple[int, int, int, int]) -> Finding:
    top, bottom, left, right = border
    inner = g[top : g.shape[0] - bottom, left : g.shape[1] - right]
    rows, columns = inner.shape
    if min(rows, columns) < 16:
        return _f(
            "inverted",
            "Grey-scale polarity not assessed (too little image inside the border)",
            Severity.NORMAL,
            0.0,
            _DISPLAY_UNIT,
            0.5,
        )
    band_r, band_c = max(1, rows // 12), max(1, columns // 12)
    ring = np.concatenate(
        [
            inner[:band_r].reshape(-1),
            inner[-band_r:].reshape(-1),
            inner[band_r:-band_r, :band_c].reshape(-1),
            inner[band_r:-band_r, -band_c:].reshape(-1),
        ]
    )
    centre = inner[rows // 4 : rows - rows // 4, columns // 4 : columns - columns // 4]
    difference = float(ring.mean() - centre.mean())
    if difference > 30:
        return _f(
            "inverted",
            f"Possibly inverted grey scale: the border is {difference:.0f} levels brighter than the centre",
            Severity.MODERATE,
            difference,
            _DISPLAY_UNIT,
            0.6,
        )
    return _f(
        "inverted",
        "Grey-scale polarity as expected (border not brighter than the centre)",
        Severity.NORMAL,
        difference,
        _DISPLAY_UNIT,
        0.6,
    )


def check_collimation(share: float) -> Finding:
    percent = 100 * share
    if share > 0.5:
        return _f(
            "collimation",
            f"Uniform border covers {percent:.0f}% of the image: very small field of view",
            Severity.MODERATE,
            percent,
            "% of area",
            0.8,
        )
    if share > 0.25:
        return _f(
            "collimation",
            f"Uniform border covers {percent:.0f}% of the image: tight collimation",
            Severity.LOW,
            percent,
            "% of area",
            0.7,
        )
    return _f(
        "collimation",
        f"Field of view adequate (uniform border {percent:.0f}% of the image)",
        Severity.NORMAL,
        percent,
        "% of area",
    )


def check_ct_values(values: np.ndarray) -> list[Finding]:
    sample = _sample(values)
    minimum = float(sample.min())
    # Scanners fill outside the reconstruction circle with one padding value far below air.
    padding = minimum < -1100 and float(np.mean(sample == minimum)) > 0.01
    body = sample[sample != minimum] if padding else sample
    if body.size == 0:
        return []
    outside = float(np.mean((body < -1100) | (body > 4000)))
    median = float(np.median(body))
    findings = []
    if outside > 0.05:
        findings.append(
            _f(
                "hu_range",
                f"{100 * outside:.0f}% of CT values lie outside the Hounsfield scale: check the rescale",
                Severity.MODERATE,
                100 * outside,
                "% of pixels",
                0.8,
            )
        )
    elif median > 300:
        findings.append(
            _f(
                "hu_range",
                f"CT values look un-rescaled (median {median:.0f} HU): check Rescale Slope/Intercept",
                Severity.MODERATE,
                median,
                "HU",
                0.7,
            )
        )
    else:
        findings.append(
            _f(
                "hu_range",
                "CT values within the Hounsfield scale",
                Severity.NORMAL,
                100 * outside,
                "% of pixels",
            )
        )
    return findings


def check_consistency(meta: ImageMeta) -> list[Finding]:
    findings = []
    if meta.modality in PROJECTION and meta.samples_per_pixel == 3:
        findings.append(
            _f(
                "colour",
                "Radiograph stored as colour (RGB): expected grayscale",
                Severity.MODERATE,
                3,
                "samples per pixel",
                0.9,
            )
        )
    plausible = PLAUSIBLE_BODY_PARTS.get(meta.modality)
    if plausible is not None and meta.body_part and meta.body_part not in plausible:
        expected = ", ".join(sorted(plausible))
        findings.append(
            _f(
                "body_part",
                f"Body part {meta.body_part} is not plausible for modality {meta.modality} "
                f"(expected one of {expected}): check Body Part Examined",
                Severity.LOW,
                0,
                "",
                0.8,
            )
        )
    size = check_physical_size(meta)
    if size is not None:
        findings.append(size)
    smallest = min(meta.rows, meta.columns)
    if meta.modality in PROJECTION | {"CT"} and 0 < smallest < 256:
        findings.append(
            _f(
                "matrix",
                f"Small image matrix for {meta.modality} ({meta.rows} x {meta.columns})",
                Severity.LOW,
                smallest,
                "pixels",
                0.9,
            )
        )
    return findings


def check_physical_size(meta: ImageMeta) -> Finding | None:
    """A finding when matrix x pixel spacing gives a size implausible for the modality, else None.

    Not assessed (None) without a spacing, a matrix, or a range for the modality.
    """
    limits = PLAUSIBLE_SIDE_MM.get(meta.modality)
    if limits is None or meta.pixel_spacing is None or min(meta.rows, meta.columns) <= 0:
        return None
    row_mm, column_mm = meta.pixel_spacing
    if not (row_mm > 0 and column_mm > 0):
        return _f(
            "pixel_spacing",
            f"Pixel spacing {row_mm:g} x {column_mm:g} mm is not positive: the image's physical size is unknown",
            Severity.LOW,
            min(row_mm, column_mm),
            "mm",
            0.9,
        )
    height, width = meta.rows * row_mm, meta.columns * column_mm
    low, high = limits
    if min(height, width) >= low and max(height, width) <= high:
        return None
    outside = min(height, width) if min(height, width) < low else max(height, width)
    return _f(
        "pixel_spacing",
        f"The image measures {height:.4g} x {width:.4g} mm (matrix x pixel spacing), implausible for "
        f"modality {meta.modality} (expected {low:g}-{high:g} mm a side): check Pixel Spacing",
        Severity.LOW,
        outside,
        "mm",
        0.8,
    )


def assess(display: np.ndarray, meta: ImageMeta, values: np.ndarray | None = None) -> list[Finding]:
    """Every applicable check for one image; a blank image gets only the blank and consistency findings.

    ``display`` is the rendered uint8 frame, ``values`` the modality values when decoded.
    """
    g = grey(display)
    blank = check_blank(g)
    if blank.severity is Severity.CRITICAL:
        return [blank, *check_consistency(meta)]
    findings = [blank, check_exposure(g), check_contrast(g, meta, values), check_noise(g)]
    if meta.modality != "CT":
        findings.append(check_clipping(g))
    if meta.modality in PROJECTION or not meta.modality:
        share, border = _uniform_border(g)
        findings.append(check_collimation(share))
        if display.ndim == 2:
            findings.append(check_inverted(g, border))
    if meta.modality == "CT" and values is not None:
        findings.extend(check_ct_values(values))
    findings.extend(check_consistency(meta))
    return findings
