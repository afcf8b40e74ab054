"""From datasets to analysable images: non-image objects refused, metadata without identifiers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydicom.dataset import Dataset

from irmsia.ai.inputs import AnalysisContext, image_input, image_meta, is_image, require_image
from irmsia.errors import InvalidDicom, InvalidRequest
from tests.factories import PHI, EnhancedSRStorage, contains_phi, make_cr, make_ct, make_multiframe_us


def _sr() -> Dataset:
    ds = make_cr()
    del ds.PixelData
    ds.SOPClassUID = EnhancedSRStorage
    return ds


def test_structured_reports_and_pdfs_are_not_images() -> None:
    pdf = make_cr()
    del pdf.PixelData
    pdf.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    pdf.EncapsulatedDocument = b"%PDF-1.4"

    for ds in (_sr(), pdf):
        assert not is_image(ds)
        with pytest.raises(InvalidDicom) as raised:
            require_image(ds)
        assert raised.value.reason == "not_an_image"
    assert is_image(make_ct())


def test_an_sr_class_with_pixel_data_is_still_not_an_image() -> None:
    ds = make_cr()
    ds.SOPClassUID = EnhancedSRStorage

    assert not is_image(ds)


def test_metadata_carries_no_identifiers() -> None:
    meta = image_meta(make_ct(), AnalysisContext(additional_context="follow-up"))

    text = repr(dataclasses.asdict(meta))
    assert contains_phi(text) == []
    assert meta.modality == "CT" and meta.body_part == "CHEST"
    assert meta.rows == 64 and meta.bits_stored == 12


def test_context_overrides_modality_and_body_part() -> None:
    meta = image_meta(make_ct(), AnalysisContext(modality="dx", body_part="hand"))

    assert (meta.modality, meta.body_part) == ("DX", "HAND")


def test_too_long_context_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        AnalysisContext(additional_context="x" * 2001)


def test_multiframe_objects_are_analysed_through_the_middle_frame() -> None:
    image = image_input(make_multiframe_us(frames=3))

    assert image.meta.frame_index == 1 and image.meta.frames == 3
    assert image.display.shape == (32, 48, 3)
    assert int(image.display[..., 1].max()) == 100  # frame 1 lights the green channel at 100
    assert image.modality_values is None


def test_modality_values_are_decoded_on_request() -> None:
    ds = make_ct()
    image = image_input(ds, with_modality=True)

    assert image.modality_values is not None
    stored = np.frombuffer(ds.PixelData, dtype=np.int16).reshape(64, 64)
    np.testing.assert_array_equal(image.modality_values, stored.astype(np.float32) - 1024)
    assert image_input(ds).modality_values is None


def test_context_text_is_the_only_free_text_passed_on() -> None:
    image = image_input(make_ct(), AnalysisContext(additional_context="compare with prior"))

    assert image.meta.additional_context == "compare with prior"
    assert PHI["StudyDescription"] not in repr(image.meta)
