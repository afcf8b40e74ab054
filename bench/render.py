"""Benchmark rendering DICOM pixel data to display PNGs, step by step, against Pillow's PNG.

Run from the repository root (under a minute)::

    .venv/bin/python bench/render.py
    .venv/bin/python bench/render.py --repeat 10

Two synthetic, PHI-free images with realistic structure (smooth anatomy plus noise, so PNG
compression behaves as on real data, unlike uniform noise):

- a 512 x 512 CT slice, signed 16-bit, 12 bits stored, HU = stored - 1024, window 40/400;
- a 2500 x 2048 CR image, unsigned 16-bit, 12 bits stored, no window (percentile default).

Steps, each the median over the repetitions: pixel decode (pydicom), LUT/window (render minus
decode), area-average thumbnail, 8-bit PNG, 16-bit PNG, thumbnail PNG, and the whole ingest path
(render with thumbnail + 8-bit PNG + thumbnail PNG). The baseline, measured in the same run on the
same pixels, is Pillow's default PNG save; the ratio is baseline time / our time.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from irmsia.domain.png import encode_png
from irmsia.domain.render import RenderOptions, render_frames, thumbnail


def _ellipse(shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    return ((rows - center[0]) / radii[0]) ** 2 + ((columns - center[1]) / radii[1]) ** 2 <= 1


def _dataset(sop_class: str, modality: str, stored: np.ndarray, signed: bool) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = (
        sop_class,
        ds.file_meta.MediaStorageSOPInstanceUID,
        modality,
    )
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.tobytes()
    return ds


def make_ct_slice(rng: np.random.Generator) -> Dataset:
    """An axial-chest-like phantom: air, body, fat ring, lungs, spine."""
    shape = (512, 512)
    hu = np.full(shape, -1000.0)
    hu[_ellipse(shape, (256, 256), (170, 230))] = -100.0
    hu[_ellipse(shape, (256, 256), (155, 215))] = 40.0
    hu[_ellipse(shape, (240, 170), (90, 70))] = -850.0
    hu[_ellipse(shape, (240, 342), (90, 70))] = -850.0
    hu[_ellipse(shape, (370, 256), (25, 25))] = 700.0
    hu += rng.normal(0.0, 12.0, size=shape)
    ds = _dataset(CTImageStorage, "CT", (np.rint(hu) + 1024).clip(0, 4095).astype(np.int16), signed=True)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    return ds


def make_cr_image(rng: np.random.Generator) -> Dataset:
    """A chest-radiograph-like phantom: smooth background, two lung fields, noise."""
    shape = (2500, 2048)
    rows, columns = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    value = 2600.0 - 0.3 * rows + 200.0 * np.sin(columns / 300.0)
    value[_ellipse(shape, (1200, 650), (800, 380))] -= 1200.0
    value[_ellipse(shape, (1200, 1400), (800, 380))] -= 1200.0
    value += rng.normal(0.0, 20.0, size=shape).astype(np.float32)
    return _dataset(
        ComputedRadiographyImageStorage, "CR", value.clip(0, 4095).astype(np.uint16), signed=False
    )


def _median_ms(func: Callable[[], object], repeat: int) -> float:
    func()  # warm-up: first-call imports and allocations are not per-image costs
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _pillow_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def bench(name: str, ds: Dataset, repeat: int) -> None:
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    no_thumb = RenderOptions(bits=16, thumbnail_size=None)
    frame = next(render_frames(ds, no_thumb))
    assert frame.display16 is not None
    small = thumbnail(frame.display, 256)

    def ingest() -> None:
        rendered = next(render_frames(ds, RenderOptions()))
        assert rendered.thumbnail is not None
        encode_png(rendered.display)
        encode_png(rendered.thumbnail)

    decode = _median_ms(lambda: decoder.as_array(ds), repeat)
    render8 = _median_ms(lambda: next(render_frames(ds, RenderOptions(thumbnail_size=None))), repeat)
    steps = {
        "decode": decode,
        "LUT/window (8-bit)": max(render8 - decode, 0.0),
        "thumbnail (area avg)": _median_ms(lambda: thumbnail(frame.display, 256), repeat),
        "8-bit PNG": _median_ms(lambda: encode_png(frame.display), repeat),
        "16-bit PNG": _median_ms(lambda: encode_png(frame.display16), repeat),
        "thumbnail PNG": _median_ms(lambda: encode_png(small), repeat),
        "ingest path total": _median_ms(ingest, repeat),
    }
    pillow8 = _median_ms(lambda: _pillow_png(frame.display), repeat)
    pillow16 = _median_ms(lambda: _pillow_png(frame.display16), repeat)
    size8, size16 = len(encode_png(frame.display)), len(encode_png(frame.display16))
    print(f"\n{name}: {ds.Rows} x {ds.Columns}, {repeat} repetitions, median ms per image")
    for step, ms in steps.items():
        print(f"  {step:<22} {ms:8.2f}")
    print(f"  {'Pillow 8-bit PNG':<22} {pillow8:8.2f}   ratio {pillow8 / steps['8-bit PNG']:5.1f}x")
    print(f"  {'Pillow 16-bit PNG':<22} {pillow16:8.2f}   ratio {pillow16 / steps['16-bit PNG']:5.1f}x")
    print(
        f"  PNG sizes: 8-bit {size8 / 1024:.0f} KiB (Pillow {len(_pillow_png(frame.display)) / 1024:.0f}), "
        f"16-bit {size16 / 1024:.0f} KiB (Pillow {len(_pillow_png(frame.display16)) / 1024:.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=0, help="repetitions (default: 40 for CT, 5 for CR)")
    args = parser.parse_args()
    rng = np.random.default_rng(2024)
    bench("CT slice", make_ct_slice(rng), args.repeat or 40)
    bench("CR image", make_cr_image(rng), args.repeat or 5)


if __name__ == "__main__":
    main()
