"""The one AI provider interface and the values that cross it.

A provider declares what input it wants (``InputSpec``) and who it is (``ModelInfo``), and
implements ``predict`` (and, when it can batch, ``predict_batch``). Everything else, from
turning a dataset into the declared tensor to timeouts, retries, validation, labelling and
provenance, happens once in ``irmsia.ai.runner``. Providers raise only IRMSIA errors:
``ProviderUnavailable`` (missing dependency or model files), ``ExternalServiceError`` /
``ServiceTimeout`` (a remote service failed: retried for remote providers), ``AIError`` (no valid
answer) or ``InputError`` (this provider cannot use this image).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

import numpy as np

from irmsia.ai.schema import AnalysisResult, Finding
from irmsia.errors import InvalidRequest

Representation = Literal["display", "modality"]
ResizeMode = Literal["stretch", "center_crop", "pad"]
Layout = Literal["CHW", "HWC"]


@dataclass(frozen=True)
class InputSpec:
    """What tensor a provider wants; the runner's preprocessing builds exactly this.

    ``representation``: "display" is the rendered 8-bit image (window and MONOCHROME1 inversion
    applied, 0..255); "modality" the modality values (e.g. HU), grayscale only.
    ``size`` (height, width) resizes (bilinear, antialiased); None keeps the native size.
    ``resize``: "stretch" ignores the aspect ratio, "center_crop" crops the central square
    first, "pad" pads to a square with the darkest value first.
    ``channels``: 1 (colour becomes luminance), 3 (grey is repeated), or None to keep the native
    array as it is: (rows, columns) or (rows, columns, 3), no layout change.
    ``value_range`` (low, high): display 0..255, or modality values clipped to ``modality_clip``
    (default: their own min..max), map linearly onto it; None keeps display values as they are
    and maps modality values onto 0..1. ``mean``/``std`` (one value or one per channel) are then
    applied as (x - mean) / std. ``dtype`` "uint8" is only for unscaled display values.
    ``keep_display``/``keep_modality`` also hand the provider the native display frame and the
    modality values (quality control needs them).
    """

    representation: Representation = "display"
    size: tuple[int, int] | None = None
    resize: ResizeMode = "stretch"
    channels: Literal[1, 3] | None = 1
    value_range: tuple[float, float] | None = None
    modality_clip: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: Layout = "CHW"
    dtype: Literal["float32", "uint8"] = "float32"
    keep_display: bool = False
    keep_modality: bool = False

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise InvalidRequest("input size must be two positive integers (height, width)")
        if self.value_range is not None and not self.value_range[0] < self.value_range[1]:
            raise InvalidRequest("value range must be (low, high) with low < high")
        if self.modality_clip is not None and not self.modality_clip[0] < self.modality_clip[1]:
            raise InvalidRequest("modality clip must be (low, high) with low < high")
        if (self.mean is None) != (self.std is None):
            raise InvalidRequest("mean and std go together")
        if self.std is not None and any(not s > 0 for s in self.std):
            raise InvalidRequest("std must be positive")
        if self.mean is not None and self.std is not None:
            allowed = {1, self.channels or 1}
            if len(self.mean) not in allowed or len(self.std) not in allowed:
                raise InvalidRequest("mean and std take one value, or one per channel")
        if self.dtype == "uint8" and (
            self.representation != "display" or self.value_range is not None or self.mean is not None
        ):
            raise InvalidRequest("uint8 input is only for unscaled display values")

    @property
    def needs_modality(self) -> bool:
        """Whether the modality values must be decoded for this spec."""
        return self.representation == "modality" or self.keep_modality


@dataclass(frozen=True)
class ImageMeta:
    """What a provider may know about an image besides its pixels: no identifiers, ever.

    ``additional_context`` is the requester's free text; callers must keep patient data out of it.
    ``modality`` and ``body_part`` are upper-case DICOM terms ("CR", "CHEST"), "" when unknown.
    ``pixel_spacing`` is (row, column) spacing in mm (Pixel Spacing, or Imager Pixel Spacing for
    projection radiographs that have it), None when absent or unusable.
    """

    modality: str = ""
    body_part: str = ""
    photometric: str = "MONOCHROME2"
    samples_per_pixel: int = 1
    rows: int = 0
    columns: int = 0
    frames: int = 1
    frame_index: int = 0
    bits_stored: int | None = None
    additional_context: str = ""
    pixel_spacing: tuple[float, float] | None = None


@dataclass(frozen=True, eq=False)
class ImageInput:
    """One image ready for preprocessing: the display frame, optionally its modality values.

    ``display`` is uint8, (rows, columns) or (rows, columns, 3); ``modality_values`` float32
    (rows, columns) for grayscale images when decoded.
    """

    display: np.ndarray
    meta: ImageMeta
    modality_values: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """The tensor a provider declared (see ``InputSpec``) plus what it asked to keep."""

    tensor: np.ndarray
    meta: ImageMeta
    display: np.ndarray | None = None
    modality_values: np.ndarray | None = None


@dataclass(frozen=True)
class ModelInfo:
    """Who a provider is, for provenance: ``weights_sha256`` is the hex digest of the weights file."""

    model: str
    version: str
    weights_sha256: str | None = None


@dataclass(frozen=True)
class ProviderOutput:
    """What ``predict`` returns; the runner validates it into an ``AnalysisResult``.

    ``risk_score`` (0..100) and ``confidence`` (0..1) are derived from the findings when None.
    ``model`` overrides the provider's model name (a remote service names the model it used).
    """

    findings: Sequence[Finding] = ()
    label_probabilities: Mapping[str, float | None] = field(default_factory=dict)
    risk_score: float | None = None
    suggested_diagnosis: str | None = None
    confidence: float | None = None
    recommendations: Sequence[str] = ()
    report_text: str | None = None
    model: str | None = None


class Provider(ABC):
    """One AI provider. Subclasses set the class attributes and implement ``predict``.

    ``remote`` providers talk to a service over the network: the runner retries their
    ``ExternalServiceError`` with backoff. ``simulated`` marks made-up output (mock only).
    ``modalities`` / ``body_parts`` (upper-case DICOM terms) restrict what the provider accepts;
    None accepts anything; an image whose body part is unknown passes the body-part check.
    """

    name: ClassVar[str]
    remote: ClassVar[bool] = False
    simulated: ClassVar[bool] = False
    modalities: frozenset[str] | None = None
    body_parts: frozenset[str] | None = None
    input_spec: InputSpec = InputSpec()
    model_info: ModelInfo

    def unsupported_reason(self, meta: ImageMeta) -> str | None:
        """Why this provider cannot analyse an image with ``meta``; None when it can."""
        if self.modalities is not None and meta.modality not in self.modalities:
            return f"the {self.name} provider does not analyse modality {meta.modality or 'unknown'}"
        if self.body_parts is not None and meta.body_part and meta.body_part not in self.body_parts:
            return f"the {self.name} provider does not analyse body part {meta.body_part}"
        return None

    @abstractmethod
    def predict(self, image: PreparedImage) -> ProviderOutput:
        """Analyse one prepared image."""

    def predict_batch(self, images: Sequence[PreparedImage]) -> list[ProviderOutput]:
        """Analyse several images; providers that batch natively override this."""
        return [self.predict(image) for image in images]

    def close(self) -> None:  # noqa: B027 - optional hook: most providers hold nothing to release
        """Release sessions, clients and memory; the default holds nothing."""


class ReportWriter(Protocol):
    """Writes the narrative ``report_text`` from a vision result (the "vision + LLM" chain).

    Implementations raise like providers do; ``remote`` tells the runner whether to retry, and
    ``name``/``model_info`` go into the result's ``report_provenance``.
    """

    @property
    def name(self) -> str: ...

    @property
    def remote(self) -> bool: ...

    @property
    def model_info(self) -> ModelInfo: ...

    def write_report(self, result: AnalysisResult, meta: ImageMeta, display: np.ndarray | None) -> str:
        """A narrative that describes ``result``'s findings; never adds findings of its own.

        ``display`` is the rendered uint8 image, for multimodal writers; None to send no image.
        """
        ...
