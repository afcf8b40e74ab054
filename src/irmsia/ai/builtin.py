"""The ``builtin`` provider (the default): image quality control, offline, nothing to download.

It reports only what it measures from the pixels (see ``irmsia.ai.qc``): exposure, contrast,
noise, clipping, polarity, field of view and consistency with the modality. It never reports a
disease or anatomy finding; its ``suggested_diagnosis`` says that no diagnostic assessment was
made, and its risk score reflects image-quality problems only.
"""

from __future__ import annotations

from typing import ClassVar

from irmsia.ai import qc
from irmsia.ai.base import InputSpec, ModelInfo, PreparedImage, Provider, ProviderOutput
from irmsia.ai.schema import Severity

NO_DIAGNOSIS = "No diagnostic assessment: image quality control only"
QC_VERSION = "2"  # bumped when checks or thresholds change: results are not comparable across versions

_ADVICE = {
    "qc.blank": "Check the acquisition and the pixel data: the image is blank",
    "qc.exposure": "Review exposure settings or the display window",
    "qc.contrast": "Review the acquisition technique or the display window: contrast is low",
    "qc.noise": "Review dose and reconstruction settings: the image is noisy",
    "qc.clipping": "Check for over-exposure or a window that clips the image",
    "qc.inverted": "Check the Photometric Interpretation (MONOCHROME1/MONOCHROME2)",
    "qc.collimation": "Check collimation and positioning: the field of view is small",
    "qc.hu_range": "Check Rescale Slope and Rescale Intercept of the CT images",
    "qc.colour": "Check the export settings: radiographs are expected in grayscale",
    "qc.body_part": "Check the Body Part Examined of the study",
    "qc.pixel_spacing": "Check Pixel Spacing / Imager Pixel Spacing: measurements on this image may be wrong",
    "qc.matrix": "Check that the original resolution image was sent, not a thumbnail",
}


class BuiltinQCProvider(Provider):
    """Quality control of any grayscale or colour image, computed in a few milliseconds."""

    name: ClassVar[str] = "builtin"
    input_spec = InputSpec(representation="display", channels=None, dtype="uint8", keep_modality=True)
    model_info = ModelInfo(model="irmsia-image-qc", version=QC_VERSION)

    def predict(self, image: PreparedImage) -> ProviderOutput:
        findings = qc.assess(image.tensor, image.meta, image.modality_values)
        problems = [f for f in findings if f.severity is not Severity.NORMAL]
        advice = [_ADVICE[f.code] for f in problems if f.code in _ADVICE]
        return ProviderOutput(
            findings=findings,
            suggested_diagnosis=NO_DIAGNOSIS,
            recommendations=advice or ["No image quality problem detected"],
        )
