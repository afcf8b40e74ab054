"""Pre-processing builds exactly the tensor an InputSpec declares."""

from __future__ import annotations

import numpy as np
import pytest

from irmsia.ai.base import ImageInput, ImageMeta, InputSpec
from irmsia.ai.preprocess import prepare, stack
from irmsia.errors import InputError, InvalidRequest


def _grey(rows: int = 40, columns: int = 60) -> ImageInput:
    display = np.tile(np.linspace(0, 255, columns).astype(np.uint8), (rows, 1))
    values = display.astype(np.float32) * 4 - 1000
    return ImageInput(display=display, meta=ImageMeta(modality="CT"), modality_values=values)


def test_display_values_map_onto_the_value_range() -> None:
    prepared = prepare(_grey(), InputSpec(size=(20, 20), value_range=(-1024.0, 1024.0)))

    assert prepared.tensor.shape == (1, 20, 20) and prepared.tensor.dtype == np.float32
    assert prepared.tensor.min() >= -1024 and prepared.tensor.max() <= 1024
    assert prepared.tensor.min() < -900 and prepared.tensor.max() > 900


def test_center_crop_keeps_the_middle_square() -> None:
    image = _grey(40, 60)
    prepared = prepare(image, InputSpec(size=(40, 40), resize="center_crop", value_range=(0.0, 255.0)))

    np.testing.assert_allclose(prepared.tensor[0], image.display[:, 10:50].astype(np.float32))


def test_pad_keeps_everything_and_fills_with_the_darkest_value() -> None:
    image = _grey(30, 60)
    prepared = prepare(image, InputSpec(size=(60, 60), resize="pad", value_range=(0.0, 255.0)))

    assert prepared.tensor.shape == (1, 60, 60)
    np.testing.assert_allclose(prepared.tensor[0, 15:45], image.display.astype(np.float32))
    assert float(prepared.tensor[0, :15].max()) == 0.0


def test_three_channels_repeat_grey_and_hwc_layout_puts_channels_last() -> None:
    prepared = prepare(_grey(), InputSpec(channels=3, layout="HWC", dtype="uint8"))

    assert prepared.tensor.shape == (40, 60, 3) and prepared.tensor.dtype == np.uint8
    assert np.array_equal(prepared.tensor[..., 0], prepared.tensor[..., 2])


def test_colour_becomes_luminance_for_one_channel() -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    prepared = prepare(ImageInput(display=rgb, meta=ImageMeta()), InputSpec(value_range=(0.0, 255.0)))

    assert prepared.tensor.shape == (1, 4, 4)
    assert float(prepared.tensor[0, 0, 0]) == pytest.approx(0.587 * 200, abs=0.01)


def test_mean_and_std_normalise_per_channel() -> None:
    spec = InputSpec(channels=3, value_range=(0.0, 1.0), mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    prepared = prepare(ImageInput(display=np.full((2, 2), 255, np.uint8), meta=ImageMeta()), spec)

    assert prepared.tensor[:, 0, 0].tolist() == pytest.approx([2.0, 1.0, 0.5])


def test_modality_values_are_clipped_and_scaled() -> None:
    spec = InputSpec(representation="modality", modality_clip=(-1000.0, 0.0), value_range=(0.0, 1.0))
    prepared = prepare(_grey(), spec)

    assert float(prepared.tensor.min()) == 0.0 and float(prepared.tensor.max()) == 1.0


def test_modality_input_without_modality_values_is_an_input_error() -> None:
    image = ImageInput(display=np.zeros((4, 4), np.uint8), meta=ImageMeta())

    with pytest.raises(InputError):
        prepare(image, InputSpec(representation="modality"))


def test_native_spec_passes_the_display_through_and_keeps_what_was_asked() -> None:
    image = _grey()
    prepared = prepare(image, InputSpec(channels=None, dtype="uint8", keep_modality=True))

    assert prepared.tensor is image.display
    assert prepared.modality_values is image.modality_values
    assert prepared.display is None


def test_stack_refuses_images_of_different_shapes() -> None:
    spec = InputSpec(value_range=(0.0, 1.0))
    first, second = prepare(_grey(10, 10), spec), prepare(_grey(12, 12), spec)

    assert stack([first, first]).shape == (2, 1, 10, 10)
    with pytest.raises(InputError):
        stack([first, second])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": (0, 10)},
        {"value_range": (1.0, 0.0)},
        {"mean": (0.5,)},
        {"mean": (0.5,), "std": (0.0,)},
        {"mean": (0.1, 0.2), "std": (1.0, 1.0)},
        {"dtype": "uint8", "value_range": (0.0, 1.0)},
        {"dtype": "uint8", "representation": "modality"},
    ],
)
def test_inconsistent_specs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        InputSpec(**kwargs)
