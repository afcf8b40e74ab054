"""From a de-identified DICOM dataset to the one image an AI provider analyses.

Only image objects are analysed: structured reports, encapsulated documents and anything else
without pixel data raise ``InvalidDicom`` (reason ``not_an_image``). A multi-frame object is
analysed through one frame, the middle one unless the caller names another. The display image
comes from ``irmsia.domain.render`` (the file's window, MONOCHROME1 inverted); modality values
(e.g. HU) are decoded only when a provider asks for them. Nothing identifying leaves this module:
``ImageMeta`` carries modality, body part and pixel-module facts only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder

from irmsia.ai.base import ImageInput, ImageMeta
from irmsia.domain.render import RenderOptions, apply_modality_lut, render_frames
from irmsia.errors import InvalidDicom, InvalidRequest

# SOP class families that never hold an image to analyse, even if a file carries pixel-like data.
_NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF, CDA, STL, ...
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, segmentation surfaces
)
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_CONTEXT_LIMIT = 2000
_DECODE_ERRORS = (ValueError, RuntimeError, AttributeError, NotImplementedError, TypeError, KeyError)


@dataclass(frozen=True)
class AnalysisContext:
    """What the requester adds: overrides for modality/body part and free-text context.

    ``additional_context`` is passed to providers (and so may reach a remote LLM): callers must
    keep patient data out of it. Longer than 2,000 characters raises ``InvalidRequest``.
    """

    modality: str | None = None
    body_part: str | None = None
    additional_context: str = ""

    def __post_init__(self) -> None:
        if len(self.additional_context) > _CONTEXT_LIMIT:
            raise InvalidRequest(f"additional context is limited to {_CONTEXT_LIMIT} characters")


def is_image(ds: Dataset) -> bool:
    """Whether ``ds`` is an image object with pixel data (not SR, PDF, waveform, ...)."""
    sop_class = str(ds.get("SOPClassUID") or "")
    if sop_class.startswith(_NON_IMAGE_SOP_PREFIXES):
        return False
    return any(keyword in ds for keyword in _PIXEL_KEYWORDS)


def require_image(ds: Dataset) -> None:
    """Raise ``InvalidDicom`` (reason ``not_an_image``) unless ``ds`` is an image object."""
    if not is_image(ds):
        raise InvalidDicom("the object is not an image; only images can be analysed", reason="not_an_image")


def _text(value: object) -> str:
    return str(value or "").strip().upper()


def _int(value: object, default: int) -> int:
    try:
        return int(str(value)) if value not in (None, "") else default
    except ValueError:
        return default


def image_meta(ds: Dataset, context: AnalysisContext | None = None, frame_index: int = 0) -> ImageMeta:
    """The non-identifying facts about ``ds`` a provider may use, with ``context``'s overrides."""
    context = context or AnalysisContext()
    bits = ds.get("BitsStored")
    return ImageMeta(
        modality=_text(context.modality) or _text(ds.get("Modality")),
        body_part=_text(context.body_part) or _text(ds.get("BodyPartExamined")),
        photometric=_text(ds.get("PhotometricInterpretation")) or "MONOCHROME2",
        samples_per_pixel=_int(ds.get("SamplesPerPixel"), 1),
        rows=_int(ds.get("Rows"), 0),
        columns=_int(ds.get("Columns"), 0),
        frames=max(1, _int(ds.get("NumberOfFrames"), 1)),
        frame_index=frame_index,
        bits_stored=_int(bits, 0) or None,
        additional_context=context.additional_context,
        pixel_spacing=_spacing(ds),
    )


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: Imager Pixel Spacing (detector plane) first, else Pixel Spacing.

    Projection radiographs describe the detector in Imager Pixel Spacing; Pixel Spacing there may
    be calibrated to the patient. Either gives the physical size the quality checks compare. A
    value that is not two finite numbers is None (not assessed); zero or negative ones are kept,
    so the checks can report them.
    """
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            numbers = [float(item) for item in (value if isinstance(value, MultiValue | list) else [value])]
        except (TypeError, ValueError):
            return None
        if len(numbers) == 2 and all(np.isfinite(numbers)):
            return numbers[0], numbers[1]
        return None
    return None


def image_input(
    ds: Dataset,
    context: AnalysisContext | None = None,
    *,
    with_modality: bool = False,
    frame: int | None = None,
) -> ImageInput:
    """Render the frame to analyse (the middle one by default) and, if asked, its modality values.

    Raises ``InvalidDicom`` for non-image objects and undecodable pixel data, ``NotFound`` for a
    frame index outside the object.
    """
    require_image(ds)
    frames = max(1, _int(ds.get("NumberOfFrames"), 1))
    index = frames // 2 if frame is None else frame
    rendered = next(render_frames(ds, RenderOptions(thumbnail_size=None), indices=[index]))
    meta = image_meta(ds, context, index)
    modality_values = None
    if with_modality and rendered.display.ndim == 2:
        modality_values = _modality_values(ds, index)
    return ImageInput(display=rendered.display, meta=meta, modality_values=modality_values)


def _modality_values(ds: Dataset, index: int) -> np.ndarray:
    try:
        stored, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=index)
    except _DECODE_ERRORS as exc:
        raise InvalidDicom("pixel data cannot be decoded", reason="pixel_data") from exc
    if stored.ndim != 2:
        raise InvalidDicom("pixel data shape does not match a grayscale image", reason="pixel_data")
    values = apply_modality_lut(stored, ds, index)
    return np.asarray(values, dtype=np.float32)
