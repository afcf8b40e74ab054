"""A synthetic CT phantom with anatomy-like regions, so windowing visibly changes the picture.

Air outside an elliptic body of soft tissue, two lungs whose size changes with the slice, a
spine of bone and a little noise. Built on ``tests.factories.make_ct`` (planted PHI canaries
included), only the pixels differ.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from tests.factories import make_ct

SIZE = 192


def phantom_ct(
    *, patient_id: str, study_uid: str, series_uid: str, index: int, slices: int, size: int = SIZE
) -> Dataset:
    """Slice ``index`` (0-based) of ``slices`` through the phantom, InstanceNumber ``index + 1``."""
    ds = make_ct(
        patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, rows=size, columns=size, seed=index
    )
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[(x / 0.44) ** 2 + (y / 0.34) ** 2 <= 1] = 40.0
    lung = 0.13 + 0.05 * np.sin(np.pi * (index + 1) / (slices + 1))
    for side in (-0.18, 0.18):
        hu[((x - side) / lung) ** 2 + ((y + 0.02) / (lung * 1.5)) ** 2 <= 1] = -820.0
    hu[(x**2 + (y - 0.22) ** 2) <= 0.055**2] = 900.0
    hu[(x**2 + (y - 0.22) ** 2) <= 0.03**2] = 250.0
    rng = np.random.default_rng(index)
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
    stored = np.clip(np.rint(hu + 1024.0), -2048, 4095).astype(np.int16)
    ds.PixelData = stored.tobytes()
    ds.InstanceNumber = index + 1
    ds.SliceLocation = float(index * 5)
    return ds
