"""Builders for the AI tests: chest-like phantoms with known defects, rendered image inputs."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from pydicom.dataset import Dataset

from irmsia.ai.base import ImageInput
from irmsia.ai.inputs import AnalysisContext, image_input
from tests.factories import make_cr

FIXED_NOW = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)


def _ellipse(shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    return ((rows - center[0]) / radii[0]) ** 2 + ((columns - center[1]) / radii[1]) ** 2 <= 1


def _blur(image: np.ndarray, passes: int = 3) -> np.ndarray:
    out = image.astype(np.float64)
    for _ in range(passes):
        padded = np.pad(out, 2, mode="edge")
        out = (
            sum(
                padded[2 + dy : 2 + dy + out.shape[0], 2 + dx : 2 + dx + out.shape[1]]
                for dy in range(-2, 3)
                for dx in range(-2, 3)
            )
            / 25.0
        )
    return out


def chest_phantom(size: int = 256, *, noise: float = 20.0, seed: int = 7) -> np.ndarray:
    """A 12-bit chest-like radiograph as stored values (MONOCHROME2: air dark, body bright).

    Air around the body, a body ellipse, two darker lung fields and a bright mediastinum, blurred,
    with Gaussian noise of ``noise`` stored units.
    """
    shape = (size, size)
    s = size / 256
    image = np.full(shape, 300.0)
    image[_ellipse(shape, (128 * s, 128 * s), (110 * s, 100 * s))] = 2600.0
    image[_ellipse(shape, (120 * s, 85 * s), (70 * s, 35 * s))] = 1300.0
    image[_ellipse(shape, (120 * s, 171 * s), (70 * s, 35 * s))] = 1300.0
    image[_ellipse(shape, (125 * s, 128 * s), (80 * s, 14 * s))] = 3000.0
    image = _blur(image)
    rng = np.random.default_rng(seed)
    image += rng.normal(0.0, noise, shape)
    return np.clip(np.rint(image), 0, 4095).astype(np.uint16)


def cr_dataset(stored: np.ndarray, **attributes: object) -> Dataset:
    """A CR dataset (tests.factories.make_cr) carrying ``stored`` as its 12-bit pixels."""
    ds = make_cr(rows=stored.shape[0], columns=stored.shape[1])
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def cr_input(
    stored: np.ndarray, *, context: AnalysisContext | None = None, **attributes: object
) -> ImageInput:
    return image_input(cr_dataset(stored, **attributes), context, with_modality=True)


@pytest.fixture
def fixed_clock():
    return lambda: FIXED_NOW
