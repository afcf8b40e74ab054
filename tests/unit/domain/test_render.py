"""Rendering DICOM pixel data for display: LUT pipeline, colour, frames, thumbnails, errors."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from irmsia.domain.render import (
    AUTO,
    CT_SOFT_TISSUE,
    WINDOW_PRESETS,
    RenderedFrame,
    RenderOptions,
    Window,
    apply_modality_lut,
    apply_window,
    default_window,
    render_frames,
    thumbnail,
    window_presets,
)
from irmsia.errors import InvalidDicom, InvalidRequest, NotFound
from tests.factories import contains_phi, make_cr, make_ct, make_multiframe_us

RESCALE_SLOPE = Tag(0x0028, 0x1053)


def _bundled(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert isinstance(path, str), "only files bundled with the installed pydicom are used"
    return pydicom.dcmread(path)


def _render(
    ds: Dataset, options: RenderOptions | None = None, indices: list[int] | None = None
) -> list[RenderedFrame]:
    return list(render_frames(ds, options, indices=indices))


def _one(ds: Dataset, options: RenderOptions | None = None) -> RenderedFrame:
    (frame,) = _render(ds, options)
    return frame


def _set_pixels(ds: Dataset, stored: np.ndarray) -> Dataset:
    ds.Rows, ds.Columns = stored.shape[-2:]
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def _ct_ramp() -> tuple[Dataset, np.ndarray]:
    """A CT whose stored values 0..2024 are HU -1024..+1000 (intercept -1024), window 40/400."""
    stored = np.arange(45 * 45, dtype=np.int16).reshape(45, 45)
    return _set_pixels(make_ct(rows=45, columns=45, phi_extras=False), stored), stored


def _cr_ramp() -> tuple[Dataset, np.ndarray]:
    """A CR whose unsigned 12-bit stored values are 0..4095, no rescale, no window."""
    stored = np.arange(4096, dtype=np.uint16).reshape(16, 256)
    return _set_pixels(make_cr(rows=16, columns=256), stored), stored


def _linear_reference(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR, written as the standard's three cases, in float64."""
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    ramp = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.where(x <= low, 0.0, np.where(x > high, 1.0, ramp))


def _lut_item(descriptor: list[int], data: np.ndarray) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.LUTData = [int(v) for v in data]
    return item


# --- grayscale pipeline on generated images with known values --------------------------------


def test_ct_window_40_400_gives_black_below_minus_160_white_above_240_and_the_standard_ramp() -> None:
    ds, stored = _ct_ramp()
    frame = _one(ds, RenderOptions(bits=16))
    hu = stored.astype(np.float64) - 1024

    assert frame.window == Window(40.0, 400.0, "LINEAR")
    assert (frame.display[hu <= -160] == 0).all()
    assert (frame.display[hu >= 240] == 255).all()
    assert (frame.display16[hu <= -160] == 0).all()
    assert (frame.display16[hu >= 240] == 65535).all()
    expected = _linear_reference(hu, 40, 400) * 255
    clear = np.abs(expected % 1 - 0.5) > 1e-3  # away from rounding ties
    assert np.array_equal(frame.display[clear], np.floor(expected[clear] + 0.5).astype(np.uint8))
    inside = (hu > -160) & (hu < 239)
    assert np.all(np.diff(frame.display[inside].astype(int)) >= 0)
    assert frame.display[hu == 40].item() == 128  # ((40 - 39.5) / 399 + 0.5) * 255 = 127.8


def test_sixteen_bit_image_is_the_same_window_scaled_to_65535() -> None:
    ds, stored = _ct_ramp()
    frame = _one(ds, RenderOptions(bits=16))
    expected = np.floor(_linear_reference(stored - 1024.0, 40, 400) * 65535 + 0.5)

    assert frame.display16 is not None and frame.display16.dtype == np.uint16
    assert np.abs(frame.display16.astype(np.int64) - expected).max() <= 1
    assert np.unique(frame.display16).size > np.unique(frame.display).size


def test_images_sharing_a_window_get_their_own_pixels_and_a_change_in_window_is_seen() -> None:
    # The lookup tables are shared between slices with the same rescale and window: what one
    # rendering returns is its own array, and another window or intercept gets its own table.
    ds, stored = _ct_ramp()
    first = _one(ds, RenderOptions(bits=16))
    expected8, expected16 = first.display.copy(), first.display16.copy()  # type: ignore[union-attr]
    first.display[:] = 7
    first.display16[:] = 7  # type: ignore[index]
    again = _one(ds, RenderOptions(bits=16))
    assert np.array_equal(again.display, expected8) and np.array_equal(again.display16, expected16)

    ds.RescaleIntercept = -1000  # 24 HU brighter everywhere
    shifted = _one(ds)
    reference = np.floor(_linear_reference(stored - 1000.0, 40, 400) * 255 + 0.5)
    assert np.abs(shifted.display.astype(int) - reference).max() <= 1
    assert not np.array_equal(shifted.display, expected8)
    wide = _one(ds, RenderOptions(window=(40.0, 2000.0)))
    assert wide.window == Window(40.0, 2000.0) and np.unique(wide.display).size < np.unique(expected8).size


def test_eight_bit_rendering_has_no_sixteen_bit_image_unless_asked() -> None:
    ds, _ = _ct_ramp()
    frame = _one(ds)
    assert frame.display.dtype == np.uint8
    assert frame.display16 is None


def test_rescale_slope_and_intercept_are_applied() -> None:
    ds, stored = _ct_ramp()
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000

    values = apply_modality_lut(stored, ds)
    frame = _one(ds, RenderOptions(window=(0.0, 1000.0)))

    assert values.dtype == np.float32
    assert np.array_equal(values, stored * 2.0 - 1000)
    expected = _linear_reference(stored * 2.0 - 1000, 0, 1000) * 255
    clear = np.abs(expected % 1 - 0.5) > 1e-3
    assert np.array_equal(frame.display[clear], np.floor(expected[clear] + 0.5).astype(np.uint8))


def test_modality_lut_sequence_replaces_rescale() -> None:
    ds, stored = _cr_ramp()
    ds.RescaleSlope, ds.RescaleIntercept = 5, 5  # must be ignored: the LUT wins
    item = _lut_item([4096, 0, 16], 4095 - np.arange(4096))
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])

    values = apply_modality_lut(stored, ds)
    frame = _one(ds, RenderOptions(window=(2048.0, 4096.0)))

    assert np.array_equal(values, 4095.0 - stored)
    assert frame.display[stored == 0].item() == 255
    assert frame.display[stored == 4095].item() == 0
    assert np.all(np.diff(frame.display.reshape(-1).astype(int)) <= 0)


def test_voi_lut_sequence_is_applied_entry_by_entry() -> None:
    ds, stored = _cr_ramp()
    ds.WindowCenter, ds.WindowWidth = 100, 10  # the VOI LUT Sequence takes precedence
    ds.VOILUTSequence = Sequence([_lut_item([4096, 0, 8], 255 - np.arange(4096) // 16)])

    frame = _one(ds)

    assert np.array_equal(frame.display, (255 - stored // 16).astype(np.uint8))
    assert frame.window is None


def test_voi_lut_first_mapped_value_shifts_and_clamps_the_input() -> None:
    ds, stored = _cr_ramp()
    ds.VOILUTSequence = Sequence([_lut_item([256, 1000, 8], np.arange(256))])

    frame = _one(ds)

    assert np.array_equal(frame.display, np.clip(stored.astype(int) - 1000, 0, 255).astype(np.uint8))


def test_voi_lut_declared_16_bit_holding_12_bit_data_still_spans_black_to_white() -> None:
    ds, stored = _cr_ramp()
    ds.VOILUTSequence = Sequence([_lut_item([4096, 0, 16], np.arange(4096))])

    frame = _one(ds)

    assert np.array_equal(
        frame.display, np.floor(stored.astype(np.float64) * 255 / 4095 + 0.5).astype(np.uint8)
    )


def test_monochrome1_is_inverted() -> None:
    options = RenderOptions(window=(2048.0, 4096.0))
    mono1 = _one(make_cr(monochrome1=True, seed=3), options).display
    mono2 = _one(make_cr(monochrome1=False, seed=3), options).display

    assert np.array_equal(mono1.astype(int), 255 - mono2.astype(int))


def test_monochrome1_with_default_window_shows_the_lowest_value_white() -> None:
    ds = make_cr(monochrome1=True, seed=4)
    stored = ds.pixel_array
    frame = _one(ds)
    assert frame.display[stored == stored.min()].min() == 255
    assert frame.display[stored == stored.max()].max() == 0


def test_file_window_function_linear_exact_is_used() -> None:
    ds, stored = _cr_ramp()
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2048, 4096, "LINEAR_EXACT"
    frame = _one(ds)
    assert frame.window == Window(2048.0, 4096.0, "LINEAR_EXACT")
    expected = np.clip((stored - 2048.0) / 4096 + 0.5, 0, 1) * 255
    assert np.array_equal(frame.display, np.floor(expected + 0.5).astype(np.uint8))


def test_first_of_several_windows_is_used() -> None:
    ds, _ = _ct_ramp()
    ds.WindowCenter, ds.WindowWidth = [-600, 40], [1500, 400]
    assert _one(ds).window == Window(-600.0, 1500.0)


def test_caller_window_overrides_the_file_window() -> None:
    ds, _ = _ct_ramp()
    assert _one(ds, RenderOptions(window=(400.0, 1800.0))).window == Window(400.0, 1800.0)


def test_invalid_file_window_falls_back_to_the_modality_default() -> None:
    ds, _ = _ct_ramp()
    ds.WindowWidth = 0
    assert _one(ds).window == CT_SOFT_TISSUE


def test_ct_without_window_uses_soft_tissue() -> None:
    ds, _ = _ct_ramp()
    del ds.WindowCenter, ds.WindowWidth
    assert _one(ds).window == CT_SOFT_TISSUE


def test_cr_without_window_uses_a_percentile_window() -> None:
    ds, _ = _cr_ramp()
    frame = _one(ds)
    assert frame.window is not None and frame.window.function == "LINEAR_EXACT"
    low = frame.window.center - frame.window.width / 2
    high = frame.window.center + frame.window.width / 2
    assert low == pytest.approx(0.005 * 4095, abs=2)
    assert high == pytest.approx(0.995 * 4095, abs=2)
    assert frame.display.min() == 0 and frame.display.max() == 255


def test_eight_bit_grayscale_without_window_is_shown_as_stored() -> None:
    ds = _bundled("image_dfl.dcm")  # deflated transfer syntax, 8-bit OT
    frame = _one(ds)
    assert np.array_equal(frame.display, ds.pixel_array)


def test_default_window_values() -> None:
    ramp = np.arange(10000, dtype=np.float32)
    window = default_window("MR", ramp)
    assert default_window("CT", ramp) == CT_SOFT_TISSUE
    assert window.center == pytest.approx(4999.5, abs=0.01)
    assert window.width == pytest.approx(9899.01, abs=0.01)
    assert default_window("PT", np.full((4, 4), 7.0)) == Window(7.5, 1.0, "LINEAR_EXACT")


def test_default_window_falls_back_to_min_max_when_percentiles_coincide() -> None:
    mask = np.zeros((100, 100), dtype=np.float32)
    mask[0, :3] = 1.0  # 0.03 % of the pixels: inside both percentiles
    assert default_window("SEG", mask) == Window(0.5, 1.0, "LINEAR_EXACT")


def test_apply_window_linear_exact_and_sigmoid_follow_the_standard() -> None:
    x = np.linspace(-500, 500, 101, dtype=np.float32)
    exact = apply_window(x, Window(10.0, 300.0, "LINEAR_EXACT"))
    sigmoid = apply_window(x, Window(10.0, 300.0, "SIGMOID"))
    assert np.allclose(exact, np.clip((x - 10.0) / 300 + 0.5, 0, 1), atol=1e-6)
    assert np.allclose(sigmoid, 1 / (1 + np.exp(-4 * (x.astype(np.float64) - 10) / 300)), atol=1e-6)


def test_sigmoid_saturates_at_extremes_without_overflow() -> None:
    out = apply_window(np.array([-1e9, 1e9], dtype=np.float32), Window(0.0, 1.0, "SIGMOID"))
    assert out[0] == pytest.approx(0.0, abs=1e-12) and out[1] == pytest.approx(1.0)


def test_linear_window_of_width_one_is_a_threshold() -> None:
    out = apply_window(np.array([99.0, 99.5, 100.0]), Window(100.0, 1.0))
    assert out.tolist() == [0.0, 0.0, 1.0]


# --- enhanced multi-frame and frames -------------------------------------------------------------


def _enhanced_ct() -> Dataset:
    """Two frames of stored 1000: frame 0 rescaled per frame (intercept 0), frame 1 by shared (-1024)."""
    ds = make_ct(rows=4, columns=4, phi_extras=False)
    del ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth
    _set_pixels(ds, np.full((2, 4, 4), 1000, dtype=np.int16))
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, 0, "US"
    first = Dataset()
    first.PixelValueTransformationSequence = Sequence([transform])
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 1000, 200
    first.FrameVOILUTSequence = Sequence([voi])
    shared_transform = Dataset()
    shared_transform.RescaleSlope, shared_transform.RescaleIntercept = 1, -1024
    shared_voi = Dataset()
    shared_voi.WindowCenter, shared_voi.WindowWidth = 40, 400
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([shared_transform])
    shared.FrameVOILUTSequence = Sequence([shared_voi])
    ds.PerFrameFunctionalGroupsSequence = Sequence([first, Dataset()])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    return ds


def test_enhanced_frames_use_per_frame_then_shared_functional_groups() -> None:
    frames = _render(_enhanced_ct())
    assert [f.window for f in frames] == [Window(1000.0, 200.0), Window(40.0, 400.0)]
    assert (frames[0].display == 128).all()  # ((1000 - 999.5) / 199 + 0.5) * 255 = 128.1
    assert (frames[1].display == 87).all()  # ((-24 - 39.5) / 399 + 0.5) * 255 = 86.9


def test_multiframe_gives_one_rendered_frame_per_frame_in_order() -> None:
    frames = _render(make_multiframe_us(frames=3, rows=8, columns=6))
    assert [f.index for f in frames] == [0, 1, 2]
    for f, frame in enumerate(frames):
        expected = np.zeros((8, 6, 3), dtype=np.uint8)
        expected[:, :, f % 3] = 50 * (f + 1)
        assert np.array_equal(frame.display, expected)
        assert frame.window is None


def test_selected_frames_only_are_rendered() -> None:
    ds = _bundled("rtdose.dcm")  # 15 frames, 32-bit
    frames = _render(ds, indices=[14, 2])
    assert [f.index for f in frames] == [14, 2]
    assert len(_render(ds)) == 15


def test_frame_index_outside_the_object_is_not_found() -> None:
    with pytest.raises(NotFound):
        _render(make_multiframe_us(frames=2), indices=[2])


def test_multiframe_default_window_comes_from_the_middle_frame_for_every_frame() -> None:
    ds, _ = _cr_ramp()
    stack = np.stack([np.arange(4096).reshape(16, 256) // (f + 1) for f in range(3)]).astype(np.uint16)
    _set_pixels(ds, stack)

    frames = _render(ds)
    alone = _render(ds, indices=[0])[0]

    assert frames[0].window == frames[1].window == frames[2].window == alone.window
    assert frames[1].window == default_window("CR", stack[1].astype(np.float32))
    assert frames[1].display.max() == 255 and frames[2].display.max() < 255


# --- colour --------------------------------------------------------------------------------------


def test_ybr_full_is_converted_to_rgb() -> None:
    rgb = np.random.default_rng(5).integers(0, 256, size=(2, 8, 6, 3), dtype=np.uint8)
    ds = make_multiframe_us(frames=2, rows=8, columns=6)
    ds.PixelData = np.stack([convert_color_space(f, "RGB", "YBR_FULL") for f in rgb]).tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"

    frames = _render(ds)

    for frame, expected in zip(frames, rgb, strict=True):
        assert np.abs(frame.display.astype(int) - expected).max() <= 2


def test_ybr_full_422_matches_the_lossless_rgb_original() -> None:
    reference = _one(_bundled("SC_rgb_rle.dcm")).display.astype(int)
    ybr = _one(_bundled("SC_ybr_full_422_uncompressed.dcm")).display.astype(int)
    assert np.abs(ybr - reference).mean() < 1.0  # chroma subsampling loses a little at edges


def test_palette_color_goes_through_the_palette() -> None:
    ds = _bundled("examples_palette.dcm")
    stored = ds.pixel_array
    frame = _one(ds)
    assert frame.display.shape == (*stored.shape, 3)
    for channel, colour in enumerate(("Red", "Green", "Blue")):
        table = np.frombuffer(ds[f"{colour}PaletteColorLookupTableData"].value, "<u2").astype(np.float64)
        expected = np.floor(table[stored] * 255 / 65535 + 0.5).astype(np.uint8)
        assert np.array_equal(frame.display[..., channel], expected)


def test_sixteen_and_thirty_two_bit_rgb_are_scaled_to_the_display_range() -> None:
    reference = [f.display for f in _render(_bundled("SC_rgb_rle_2frame.dcm"))]
    for name in ("SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_rle_32bit_2frame.dcm"):
        frames = _render(_bundled(name), RenderOptions(bits=16))
        assert [f.display.tolist() for f in frames] == [r.tolist() for r in reference]
        assert all(f.display16 is not None and f.display16.max() == 65535 for f in frames)


def test_rgb_sixteen_bit_output_of_eight_bit_samples_is_exact() -> None:
    frame = _one(_bundled("examples_rgb_color.dcm"), RenderOptions(bits=16))
    assert frame.display16 is not None
    assert np.array_equal(frame.display16, frame.display.astype(np.uint16) * 257)


# --- transfer syntaxes of pydicom's bundled files ----------------------------------------------

LOSSLESS_MR = [
    ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
    ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
    ("MR_small_RLE.dcm", RLELossless),
    ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless),
    ("MR_small_jp2klossless.dcm", JPEG2000Lossless),
]


@pytest.mark.parametrize(("name", "syntax"), LOSSLESS_MR)
def test_lossless_transfer_syntaxes_render_identically_to_the_uncompressed_original(
    name: str, syntax: str
) -> None:
    ds = _bundled(name)
    original = _one(_bundled("MR_small.dcm"))
    assert _bundled("MR_small.dcm").file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.TransferSyntaxUID == syntax
    frame = _one(ds)
    assert frame.window == original.window == Window(600.0, 1600.0)
    assert np.array_equal(frame.display, original.display)


RGB_VARIANTS = [
    ("SC_rgb_jpeg_gdcm.dcm", JPEGLosslessSV1, 0.0),
    ("SC_rgb_gdcm_KY.dcm", JPEG2000, 0.0),
    ("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit, 1.0),  # YBR_FULL inside
    ("SC_rgb_jls_lossy_line.dcm", JPEGLSNearLossless, 1.0),
]


@pytest.mark.parametrize(("name", "syntax", "tolerance"), RGB_VARIANTS)
def test_compressed_colour_renders_close_to_the_lossless_original(
    name: str, syntax: str, tolerance: float
) -> None:
    ds = _bundled(name)
    assert ds.file_meta.TransferSyntaxUID == syntax
    reference = _one(_bundled("SC_rgb_rle.dcm")).display.astype(int)
    assert np.abs(_one(ds).display.astype(int) - reference).mean() <= tolerance


@pytest.mark.parametrize(
    ("name", "syntax", "shape"),
    [
        ("JPGExtended.dcm", JPEGExtended12Bit, (1024, 256)),
        ("JPEG2000.dcm", JPEG2000, (1024, 256)),
        ("JPEGLSNearLossless_16.dcm", JPEGLSNearLossless, (50, 10)),
        ("image_dfl.dcm", DeflatedExplicitVRLittleEndian, (512, 512)),
        ("CT_small.dcm", ExplicitVRLittleEndian, (128, 128)),
    ],
)
def test_grayscale_transfer_syntaxes_render_with_contrast(
    name: str, syntax: str, shape: tuple[int, int]
) -> None:
    ds = _bundled(name)
    assert ds.file_meta.TransferSyntaxUID == syntax
    frame = _one(ds)
    assert frame.display.shape == shape and frame.display.dtype == np.uint8
    assert frame.display.min() == 0 and frame.display.max() == 255


def test_multiframe_jpeg_baseline_ybr_422_cine_renders_every_frame() -> None:
    ds = _bundled("examples_ybr_color.dcm")
    frames = _render(ds, RenderOptions(thumbnail_size=None))
    assert len(frames) == 30 and all(f.display.shape == (240, 320, 3) for f in frames)
    assert all(f.thumbnail is None for f in frames)
    assert not np.array_equal(frames[0].display, frames[29].display)


# --- thumbnails ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "size", "expected"),
    [
        ((512, 512), 256, (256, 256)),
        ((300, 484), 256, (159, 256)),
        ((2000, 100), 256, (256, 13)),
        ((240, 320, 3), 64, (48, 64, 3)),
        ((1, 900), 90, (1, 90)),
        ((100, 80), 256, (100, 80)),
    ],
)
def test_thumbnail_keeps_aspect_with_the_longest_side_at_most_size(
    shape: tuple[int, ...], size: int, expected: tuple[int, ...]
) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    small = thumbnail(image, size)
    assert small.shape == expected and small.dtype == np.uint8 and small.flags.c_contiguous


def test_thumbnail_averages_areas_including_partial_pixels() -> None:
    checker = np.indices((4, 4)).sum(axis=0) % 2 * 255
    assert (thumbnail(checker.astype(np.uint8), 2) == 128).all()  # 127.5 rounded half up
    row = np.array([[0, 90, 180]] * 3, dtype=np.uint8)
    # 3 → 2 columns: [0 + 90/2] / 1.5 = 30 and [90/2 + 180] / 1.5 = 150.
    assert thumbnail(row, 2).tolist() == [[30, 150], [30, 150]]


def test_thumbnail_of_sixteen_bit_keeps_its_dtype() -> None:
    image = np.full((10, 20), 65535, dtype=np.uint16)
    small = thumbnail(image, 5)
    assert small.dtype == np.uint16 and (small == 65535).all()


def test_rendered_thumbnail_is_the_display_image_shrunk() -> None:
    frame = _one(_bundled("examples_overlay.dcm"))
    assert frame.thumbnail is not None and frame.thumbnail.shape == (159, 256)
    assert np.array_equal(frame.thumbnail, thumbnail(frame.display, 256))


# --- options, presets, errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{"bits": 12}, {"window": (40.0, 0.5)}, {"window": (float("nan"), 10.0)}, {"thumbnail_size": 0}]
)
def test_invalid_render_options_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        RenderOptions(**kwargs)


def test_window_width_rules_follow_the_function() -> None:
    with pytest.raises(InvalidRequest):
        Window(0.0, 0.5, "LINEAR")
    assert Window(0.0, 0.5, "LINEAR_EXACT").width == 0.5


def test_window_presets_are_data_for_the_viewer() -> None:
    ct = {preset.name: preset.window for preset in window_presets("CT")}
    assert ct == {
        "brain": Window(40.0, 80.0),
        "soft tissue": Window(40.0, 400.0),
        "lung": Window(-600.0, 1500.0),
        "bone": Window(400.0, 1800.0),
    }
    assert window_presets("MR") == window_presets("CR") == window_presets("DX") == (AUTO,)
    assert window_presets(None) == (AUTO,) and AUTO.window is None
    with pytest.raises(TypeError):
        WINDOW_PRESETS["XA"] = (AUTO,)


def test_truncated_pixel_data_raises_invalid_dicom_without_file_values() -> None:
    with pytest.raises(InvalidDicom) as caught:
        _render(_bundled("MR_truncated.dcm"))
    assert caught.value.reason == "pixel_data"
    assert not any(character.isdigit() for character in caught.value.detail)


def test_decode_failure_message_carries_no_patient_data() -> None:
    ds = make_ct(rows=16, columns=16)
    ds.PixelData = ds.PixelData[:100]
    with pytest.raises(InvalidDicom) as caught:
        _render(ds)
    assert caught.value.reason == "pixel_data"
    assert contains_phi(str(caught.value)) == []


def test_missing_pixel_data_raises_invalid_dicom() -> None:
    ds = make_ct(rows=4, columns=4)
    del ds.PixelData
    with pytest.raises(InvalidDicom) as caught:
        _render(ds)
    assert caught.value.reason == "pixel_data"


def test_missing_transfer_syntax_raises_invalid_dicom() -> None:
    ds = make_ct(rows=4, columns=4)
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(InvalidDicom):
        _render(ds)


def test_malformed_voi_lut_raises_invalid_dicom() -> None:
    ds, _ = _cr_ramp()
    ds.VOILUTSequence = Sequence([_lut_item([4096, 0, 8], np.arange(10))])
    with pytest.raises(InvalidDicom) as caught:
        _render(ds)
    assert caught.value.reason == "pixel_data"


def test_zero_rescale_slope_is_treated_as_one_instead_of_blanking_the_image() -> None:
    ds, stored = _cr_ramp()
    ds.RescaleSlope, ds.RescaleIntercept = 0, 0
    assert np.array_equal(apply_modality_lut(stored, ds), stored.astype(np.float32))


def test_malformed_rescale_raises_invalid_dicom() -> None:
    ds, _ = _cr_ramp()
    # As read from a file: pydicom converts the raw bytes only when the element is accessed.
    ds[RESCALE_SLOPE] = RawDataElement(RESCALE_SLOPE, "DS", 4, b"abc ", 0, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom's own notice about the invalid DS
        with pytest.raises(InvalidDicom) as caught:
            _render(ds)
    assert "abc" not in str(caught.value)


def _native(allocated: int, stored: int, signed: int, frames: int, syntax: str) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(allocated * 100 + stored + signed)
    raw = rng.integers(0, 1 << allocated, size=(frames, 6, 7), dtype=np.uint32).astype(
        np.uint8 if allocated == 8 else np.uint16
    )
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 6, 7, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
    ds.PixelRepresentation = signed
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = raw.tobytes()
    return ds, raw


@pytest.mark.parametrize(
    ("allocated", "stored", "signed"),
    [
        (16, 12, 0),
        (16, 12, 1),
        (16, 16, 0),
        (16, 16, 1),
        (16, 10, 1),
        (8, 8, 0),
        (8, 7, 0),
        (8, 8, 1),
        (8, 6, 1),
    ],
)
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_native_grayscale_is_read_as_pydicom_decodes_it(
    allocated: int, stored: int, signed: int, syntax: str
) -> None:
    from pydicom.pixels import get_decoder

    from irmsia.domain.render import _decoder_frames, _native_grey

    ds, _raw = _native(allocated, stored, signed, 3, syntax)
    assert _native_grey(ds) is not None  # the fast path is taken
    ours = list(_decoder_frames(ds, [2, 0]))
    theirs = list(get_decoder(syntax).iter_array(ds, indices=[2, 0]))
    for (pixels, meta), (expected, expected_meta) in zip(ours, theirs, strict=True):
        assert pixels.dtype == expected.dtype and pixels.shape == expected.shape
        assert np.array_equal(pixels, expected)
        for key in ("bits_stored", "pixel_representation", "photometric_interpretation"):
            assert str(getattr(meta[key], "value", meta[key])) == str(
                getattr(expected_meta[key], "value", expected_meta[key])
            )
        pixels[0, 0] = 1  # a copy: the dataset's bytes are untouched
    assert ds.PixelData == _native(allocated, stored, signed, 3, syntax)[1].tobytes()


def test_pixel_data_the_fast_path_cannot_read_goes_through_pydicom() -> None:
    from irmsia.domain.render import _native_grey

    short, _ = _native(16, 12, 0, 2, ExplicitVRLittleEndian)
    short.PixelData = short.PixelData[:-10]
    big, _ = _native(16, 12, 0, 1, ExplicitVRBigEndian)
    colour, _ = _native(8, 8, 0, 1, ExplicitVRLittleEndian)
    colour.SamplesPerPixel, colour.PhotometricInterpretation = 3, "RGB"
    wide, _ = _native(16, 12, 0, 1, ExplicitVRLittleEndian)
    wide.BitsAllocated = 32
    for ds in (short, big, colour, wide):
        assert _native_grey(ds) is None
    with pytest.raises(InvalidDicom):  # the short data are refused by pydicom's path
        list(render_frames(short))


def test_a_file_read_lazily_takes_the_fast_path_with_the_same_pixels() -> None:
    from pydicom.pixels import get_decoder

    from irmsia.domain.render import _decoder_frames, _native_grey
    from tests.factories import to_bytes

    ds = pydicom.dcmread(io.BytesIO(to_bytes(make_ct(seed=5))))  # Pixel Data still undecoded
    assert _native_grey(ds) is not None
    ((pixels, _),) = list(_decoder_frames(ds, [0]))
    ((expected, _),) = list(get_decoder(ds.file_meta.TransferSyntaxUID).iter_array(ds, indices=[0]))
    assert pixels.dtype == expected.dtype and np.array_equal(pixels, expected)
