"""Render DICOM pixel data as display images (the pipelines of PS3.4 N.2).

Grayscale: stored values → Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence,
PS3.3 C.11.1) → VOI LUT (VOI LUT Sequence, else Window Center/Width with the VOI LUT Function
LINEAR, LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2) → MONOCHROME1 inversion → 8-bit display values
and, on request, 16-bit ones. Enhanced multi-frame objects take rescale and window per frame from
the Per-Frame, then Shared, Functional Groups. Presentation LUT Shape is not applied.

Colour: RGB is kept; YBR_FULL, YBR_FULL_422 and the JPEG 2000 YBR_ICT/YBR_RCT come out of the
decoder as RGB; PALETTE COLOR goes through its palette (PS3.3 C.7.6.3.1.5). Samples with more than
8 bits are scaled to the display range.

When the file carries no window and the caller gives none, ``default_window`` decides:

- CT: soft tissue, centre 40 HU, width 400 HU;
- images stored in at most 8 bits without a Modality LUT: the full stored range, i.e. shown as
  stored (secondary captures, segmentations);
- anything else: the 0.5th to 99.5th percentile of the modality values, so that a few hot pixels
  or a large background do not flatten the image (min..max when those coincide); multi-frame
  images use their middle frame, so that a cine loop does not flicker.

Integer pixel data of up to 16 bits is mapped through lookup tables built by running these same
functions over every possible stored value, so a 16-bit slice costs one table look-up per pixel;
the last few tables are remembered (read-only), so the slices of a series build theirs once.
Everything works on in-memory datasets and arrays: no file, network or clock access.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from irmsia.errors import InvalidDicom, InvalidRequest, NotFound

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]

# What pydicom and its plugins raise for undecodable or inconsistent pixel data and pixel-module
# attributes. Listed so that programming errors elsewhere are not swallowed.
_DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    AttributeError,
    NotImplementedError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
)
_FUNCTIONS: Mapping[str, VoiFunction] = MappingProxyType(
    {"LINEAR": "LINEAR", "LINEAR_EXACT": "LINEAR_EXACT", "SIGMOID": "SIGMOID"}
)
_PERCENTILES = (0.5, 99.5)
_SAMPLE_LIMIT = 1 << 16  # pixels sampled for the default window: plenty for two percentiles
_CHUNK = 1 << 16  # pixels per table look-up chunk: its intp indices stay in the CPU cache
_SIGMOID_LIMIT = 80.0  # exp() argument bound; keeps float32 from overflowing (no warnings)


def _pixel_error(what: str) -> InvalidDicom:
    return InvalidDicom(f"pixel data {what}", reason="pixel_data")


@dataclass(frozen=True)
class Window:
    """A VOI window in modality units (e.g. HU for CT), PS3.3 C.11.2.1.2.

    Raises ``InvalidRequest`` for a width the function does not allow (LINEAR needs width >= 1,
    LINEAR_EXACT and SIGMOID width > 0) or for non-finite values.
    """

    center: float
    width: float
    function: VoiFunction = "LINEAR"

    def __post_init__(self) -> None:
        if not _valid_window(self.center, self.width, self.function):
            raise InvalidRequest("window width or function is not valid")


def _valid_window(center: float, width: float, function: str) -> bool:
    if function not in _FUNCTIONS or not (np.isfinite(center) and np.isfinite(width)):
        return False
    return width >= 1 if function == "LINEAR" else width > 0


@dataclass(frozen=True)
class WindowPreset:
    """A named window a viewer can offer; ``window`` None means automatic (the file's, else default)."""

    name: str
    window: Window | None


AUTO = WindowPreset("auto", None)
CT_SOFT_TISSUE = Window(40.0, 400.0)

WINDOW_PRESETS: Mapping[str, tuple[WindowPreset, ...]] = MappingProxyType(
    {
        "CT": (
            WindowPreset("brain", Window(40.0, 80.0)),
            WindowPreset("soft tissue", CT_SOFT_TISSUE),
            WindowPreset("lung", Window(-600.0, 1500.0)),
            WindowPreset("bone", Window(400.0, 1800.0)),
        ),
        "MR": (AUTO,),
        "CR": (AUTO,),
        "DX": (AUTO,),
    }
)


def window_presets(modality: str | None) -> tuple[WindowPreset, ...]:
    """The presets for a modality; ``(AUTO,)`` for modalities without fixed ones."""
    return WINDOW_PRESETS.get(modality or "", (AUTO,))


@dataclass(frozen=True)
class RenderOptions:
    """How to render.

    ``bits`` 16 adds a 16-bit image (the windowed output scaled to 0..65535) next to the 8-bit one.
    ``window`` (center, width) in modality units overrides the file's VOI for grayscale images (LINEAR).
    ``thumbnail_size`` is the thumbnail's longest side in pixels; None skips the thumbnail.
    Raises ``InvalidRequest`` for values outside those ranges.
    """

    bits: Literal[8, 16] = 8
    window: tuple[float, float] | None = None
    thumbnail_size: int | None = 256

    def __post_init__(self) -> None:
        if self.bits not in (8, 16):
            raise InvalidRequest("bits must be 8 or 16")
        if self.window is not None:
            Window(*self.window)  # validates
        if self.thumbnail_size is not None and self.thumbnail_size < 1:
            raise InvalidRequest("thumbnail size must be at least 1")


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    """One rendered frame.

    ``display`` is uint8, (rows, columns) for grayscale or (rows, columns, 3) RGB; ``display16`` the
    same in uint16 when 16 bits were asked for; ``thumbnail`` uint8 with the longest side at most
    the requested size. ``window`` is the VOI window applied, None for colour images and for a VOI
    LUT Sequence.
    """

    index: int
    display: np.ndarray
    display16: np.ndarray | None
    thumbnail: np.ndarray | None
    window: Window | None


# --- lookup tables -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Lut:
    """A Modality or VOI LUT (PS3.3 C.11.1.1.1): input ``first + i`` maps to ``data[i]``."""

    first: int
    data: np.ndarray  # float32
    out_max: float  # output value shown as full white (VOI) — see _parse_lut

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Values below the first entry take the first, above the last take the last."""
        index = np.clip(np.rint(values - self.first), 0, self.data.size - 1).astype(np.intp)
        return self.data.take(index)


def _lut_words(element_value: Any, big_endian: bool) -> np.ndarray:
    if isinstance(element_value, bytes | bytearray):
        return np.frombuffer(element_value, dtype=">u2" if big_endian else "<u2").astype(np.int64)
    if isinstance(element_value, int):
        return np.array([element_value], dtype=np.int64)
    return np.asarray(list(element_value), dtype=np.int64)


def _parse_lut(item: Dataset, *, signed_input: bool, big_endian: bool) -> _Lut:
    """Read LUT Descriptor and LUT Data; raises InvalidDicom when they are inconsistent.

    The first mapped value is read as signed when the LUT's input can be negative. 8-bit entries
    are accepted one per 16-bit word or packed two per word. VOI output is scaled by the largest
    value the entries need bits for, capped at the descriptor's bits: tables declared 16-bit that
    hold 12-bit data are common and would otherwise display nearly black.
    """
    try:
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        words = _lut_words(item.LUTData, big_endian)
    except _DECODE_ERRORS as exc:
        raise _pixel_error("lookup table is malformed") from exc
    entries = entries or 65536  # PS3.3 C.11.1.1.1: 0 means 2^16
    if signed_input and first >= 1 << 15:
        first -= 1 << 16
    if words.size < entries and bits == 8 and words.size * 2 >= entries:
        words = words.astype("<u2").view(np.uint8).astype(np.int64)
    if words.size < entries or bits < 1 or bits > 16:
        raise _pixel_error("lookup table is malformed")
    data = words[:entries].astype(np.float32)
    peak = int(words[:entries].max())
    out_bits = min(bits, max(peak.bit_length(), 1))
    return _Lut(first=first, data=data, out_max=float((1 << out_bits) - 1))


# --- modality and VOI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Modality:
    slope: float = 1.0
    intercept: float = 0.0
    lut: _Lut | None = None

    @property
    def identity(self) -> bool:
        return self.lut is None and self.slope == 1.0 and self.intercept == 0.0

    def apply(self, stored: np.ndarray) -> np.ndarray:
        if self.lut is not None:
            return self.lut.lookup(stored)
        values = stored.astype(np.float32)
        if self.slope != 1.0:
            values *= np.float32(self.slope)
        if self.intercept != 0.0:
            values += np.float32(self.intercept)
        return values


@dataclass(frozen=True)
class _Grey:
    """Everything that maps one frame's stored values to display values."""

    modality: _Modality
    voi: Window | _Lut | None  # None: not yet chosen (default window)
    invert: bool

    def to_unit(self, stored: np.ndarray) -> np.ndarray:
        assert self.voi is not None, "the default window is chosen before mapping"
        values = self.modality.apply(stored)
        if isinstance(self.voi, _Lut):
            unit = _apply_voi_lut(values, self.voi)
        else:
            unit = apply_window(values, self.voi)
        if self.invert:
            np.subtract(np.float32(1.0), unit, out=unit)
        return unit


def _functional_item(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """The first item of ``keyword`` in the frame's Per-Frame, else the Shared, Functional Group."""
    for groups_keyword, position in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(groups_keyword)
        if groups and len(groups) > position:
            sequence = groups[position].get(keyword)
            if sequence:
                item: Dataset = sequence[0]
                return item
    return None


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, MultiValue | list | tuple) else value


def _is_big_endian(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    return meta is not None and meta.get("TransferSyntaxUID") == ExplicitVRBigEndian


def _modality_transform(ds: Dataset, frame: int) -> _Modality:
    item = _functional_item(ds, frame, "PixelValueTransformationSequence")
    try:
        if item is None and ds.get("ModalityLUTSequence"):
            signed = int(ds.get("PixelRepresentation") or 0) == 1
            lut_item = ds.ModalityLUTSequence[0]
            return _Modality(lut=_parse_lut(lut_item, signed_input=signed, big_endian=_is_big_endian(ds)))
        source = item if item is not None else ds
        slope = _first(source.get("RescaleSlope"))
        intercept = _first(source.get("RescaleIntercept"))
        slope = 1.0 if slope is None or slope == "" else float(slope)
        intercept = 0.0 if intercept is None or intercept == "" else float(intercept)
    except _DECODE_ERRORS as exc:
        raise _pixel_error("rescale attributes are malformed") from exc
    # A zero or non-finite slope would blank the image; showing the stored values is more useful
    # than refusing an otherwise readable file.
    if not np.isfinite(slope) or slope == 0.0:
        slope = 1.0
    if not np.isfinite(intercept):
        intercept = 0.0
    return _Modality(slope=slope, intercept=intercept)


def _window_from(item: Dataset) -> Window | None:
    """The item's first Window Center/Width; None when absent or not valid for its function."""
    center, width = _first(item.get("WindowCenter")), _first(item.get("WindowWidth"))
    if center is None or width is None or center == "" or width == "":
        return None
    # PS3.3 C.11.2.1.3: LINEAR when absent; an unknown value is treated the same way.
    function = _FUNCTIONS.get(str(item.get("VOILUTFunction") or "").strip().upper(), "LINEAR")
    try:
        center_f, width_f = float(center), float(width)
    except _DECODE_ERRORS:
        return None
    if not _valid_window(center_f, width_f, function):
        return None
    return Window(center_f, width_f, function)


def _voi(ds: Dataset, frame: int, override: Window | None, modality: _Modality) -> Window | _Lut | None:
    """Override, else VOI LUT Sequence, else Window Center/Width; None leaves it to the default."""
    if override is not None:
        return override
    item = _functional_item(ds, frame, "FrameVOILUTSequence")
    if item is None:
        item = ds
        if ds.get("VOILUTSequence"):
            # The LUT's input is the modality output; it may be negative when stored values are
            # signed or the intercept shifts them below zero.
            signed = int(ds.get("PixelRepresentation") or 0) == 1 or modality.intercept < 0
            return _parse_lut(ds.VOILUTSequence[0], signed_input=signed, big_endian=_is_big_endian(ds))
    try:
        return _window_from(item)
    except _DECODE_ERRORS as exc:
        raise _pixel_error("window attributes are malformed") from exc


def apply_modality_lut(stored: np.ndarray, ds: Dataset, frame: int = 0) -> np.ndarray:
    """Stored values → modality values (float32), PS3.3 C.11.1.

    Uses the frame's Pixel Value Transformation functional group, else the Modality LUT Sequence,
    else Rescale Slope/Intercept (identity when absent). Raises InvalidDicom if those are malformed.
    """
    return _modality_transform(ds, frame).apply(stored)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Modality values → display values in [0, 1] (float32) by PS3.3 C.11.2.1.2 with ymin 0, ymax 1."""
    center, width = np.float32(window.center), np.float32(window.width)
    out = np.array(values, dtype=np.float32, copy=True)
    if window.function == "SIGMOID":
        out -= center
        out *= np.float32(-4.0) / width
        np.clip(out, -_SIGMOID_LIMIT, _SIGMOID_LIMIT, out=out)
        np.exp(out, out=out)
        out += np.float32(1.0)
        np.reciprocal(out, out=out)
        return out
    if window.function == "LINEAR" and window.width == 1:
        # Width 1 is a threshold: the LINEAR ramp below would divide by zero.
        return (out > center - np.float32(0.5)).astype(np.float32)
    if window.function == "LINEAR":
        # y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped: equal to the standard's piecewise form.
        out -= center - np.float32(0.5)
        out /= width - np.float32(1.0)
    else:  # LINEAR_EXACT: y = (x - c) / w + 0.5
        out -= center
        out /= width
    out += np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _apply_voi_lut(values: np.ndarray, lut: _Lut) -> np.ndarray:
    """Modality values → display values in [0, 1] (float32) through a VOI LUT Sequence item."""
    out = lut.lookup(values)
    out *= np.float32(1.0 / lut.out_max) if lut.out_max > 0 else np.float32(0.0)
    return out


def default_window(modality: str | None, values: np.ndarray) -> Window:
    """The window used when neither the file nor the caller gives one (see the module docstring).

    ``values`` are modality values (e.g. HU). CT gets soft tissue 40/400; anything else a
    LINEAR_EXACT window from the 0.5th to the 99.5th percentile of (a strided sample of) the
    values, or their min..max when those coincide. A constant image gets a window that shows it black.
    """
    if modality == "CT":
        return CT_SOFT_TISSUE
    flat = values.reshape(-1)
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return Window(0.5, 1.0, "LINEAR_EXACT")
    sample = flat[:: max(1, flat.size // _SAMPLE_LIMIT)]
    return _spread_window(sample, float(flat.min()), float(flat.max()))


def _spread_window(sample: np.ndarray, minimum: float, maximum: float) -> Window:
    """LINEAR_EXACT over the sample's percentiles, else over minimum..maximum."""
    low, high = (float(v) for v in np.percentile(sample, _PERCENTILES))
    if not high > low:
        low, high = minimum, maximum
    if not high > low:
        return Window(low + 0.5, 1.0, "LINEAR_EXACT")
    return Window((low + high) / 2, high - low, "LINEAR_EXACT")


def _stored_range_window(bits_stored: int, signed: bool) -> Window:
    low = -(1 << (bits_stored - 1)) if signed else 0
    high = low + (1 << bits_stored) - 1
    return Window((low + high) / 2, float(high - low), "LINEAR_EXACT")


# --- thumbnails ----------------------------------------------------------------------------------


def _area_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output sample: the input indices it overlaps and the overlap fractions (area average)."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1, dtype=np.float64) * scale
    start = np.floor(edges[:-1]).astype(np.intp)
    taps = int(np.ceil(scale)) + 1
    index = start[:, None] + np.arange(taps)[None, :]
    overlap = np.minimum(index + 1, edges[1:, None]) - np.maximum(index, edges[:-1, None])
    weights = np.clip(overlap, 0.0, None) / scale
    used = int(np.flatnonzero(weights.any(axis=0))[-1]) + 1
    return np.minimum(index[:, :used], n_in - 1), weights[:, :used].astype(np.float32)


def _shrink_first_axis(image: np.ndarray, n_out: int) -> np.ndarray:
    index, weights = _area_weights(image.shape[0], n_out)
    gathered = image[index].reshape(n_out, index.shape[1], -1).astype(np.float32)
    # One batched matrix product per output row: weights (1 x taps) @ rows (taps x rest).
    return np.matmul(weights[:, None, :], gathered).reshape((n_out, *image.shape[1:]))


def _block_factors(rows: int, columns: int, out_rows: int, out_columns: int) -> tuple[int, int] | None:
    """Both shrink factors when they are whole powers of two (512 → 256, 1024 → 256), else None."""
    if rows % out_rows or columns % out_columns:
        return None
    factors = rows // out_rows, columns // out_columns
    if any(f & (f - 1) for f in factors):
        return None
    return factors


def _block_average(image: np.ndarray, row_factor: int, column_factor: int) -> np.ndarray:
    """Area average over whole blocks in integers: the same values as the float path, 4x faster.

    With power-of-two factors the float path's weights, products and sums are all exact in
    float32, so its ``trunc(sum / n + 0.5)`` equals ``(sum + n / 2) // n`` computed here.
    """
    # Strided slices added element-wise: much faster in numpy than a reduction over a reshape.
    rows = image[0::row_factor].astype(np.uint32)
    for offset in range(1, row_factor):
        rows += image[offset::row_factor]
    total = rows[:, 0::column_factor].copy()
    for offset in range(1, column_factor):
        total += rows[:, offset::column_factor]
    count = row_factor * column_factor
    total += np.uint32(count // 2)
    total //= np.uint32(count)
    return np.ascontiguousarray(total, dtype=image.dtype)


def thumbnail(image: np.ndarray, size: int = 256) -> np.ndarray:
    """Downscale so the longest side is at most ``size``, keeping the aspect ratio, by area averaging.

    Works on uint8 or uint16, grayscale (rows, columns) or colour (rows, columns, channels); returns
    the same dtype, C-contiguous. An image already small enough is returned unchanged (no upscaling).
    """
    rows, columns = image.shape[:2]
    longest = max(rows, columns)
    if longest <= size:
        return image
    out_rows = max(1, round(rows * size / longest))
    out_columns = max(1, round(columns * size / longest))
    blocks = _block_factors(rows, columns, out_rows, out_columns)
    # Exact only while every block sum fits float32's 24-bit mantissa (see _block_average).
    if (
        blocks is not None
        and image.dtype in (np.uint8, np.uint16)
        and int(np.iinfo(image.dtype).max) * blocks[0] * blocks[1] < 1 << 24
    ):
        return _block_average(image, *blocks)
    work: np.ndarray = image
    if out_rows != rows:
        work = _shrink_first_axis(work, out_rows)
    if out_columns != columns:
        work = _shrink_first_axis(work.swapaxes(0, 1), out_columns).swapaxes(0, 1)
    result = work + np.float32(0.5)
    return np.ascontiguousarray(result, dtype=image.dtype)


# --- rendering -----------------------------------------------------------------------------------


def _quantize(unit: np.ndarray, dtype: type[np.unsignedinteger[Any]]) -> np.ndarray:
    """[0, 1] → 0..max of ``dtype``, rounded half up."""
    top = np.float32(np.iinfo(dtype).max)
    scaled = unit * top
    scaled += np.float32(0.5)
    return scaled.astype(dtype)


def _look_up(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` in cache-sized chunks.

    numpy widens the whole index array to intp first; on a 5-megapixel image that temporary
    alone makes a plain ``take`` about 2.5 times slower than this.
    """
    flat = index.reshape(-1)
    out = np.empty(flat.size, dtype=table.dtype)
    for start in range(0, flat.size, _CHUNK):
        stop = start + _CHUNK
        np.take(table, flat[start:stop], out=out[start:stop], mode="clip")
    return out.reshape(index.shape)


@functools.lru_cache(maxsize=16)
def _tables(grey: _Grey, dtype: np.dtype[Any], want16: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The 8-bit (and 16-bit) display value of every stored value of ``dtype``, read-only.

    Remembered: the slices of a series share their rescale and window, so one table serves
    them all (a 16-bit table costs about as much as a tenth of a PNG encode to build).
    """
    unsigned = np.dtype(f"u{dtype.itemsize}")
    domain = np.arange(1 << (8 * dtype.itemsize), dtype=unsigned).view(dtype)
    unit = grey.to_unit(domain)
    tables = _quantize(unit, np.uint8), (_quantize(unit, np.uint16) if want16 else None)
    for table in tables:
        if table is not None:
            table.flags.writeable = False
    return tables


def _render_grey(stored: np.ndarray, grey: _Grey, want16: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if stored.dtype.kind in "iu" and stored.dtype.itemsize <= 2:
        table8, table16 = _tables(grey, stored.dtype, want16)
        # Indexing by the unsigned view lines the table up with two's-complement order.
        index = stored.view(f"u{stored.dtype.itemsize}")
        display = _look_up(table8, index)
        display16 = _look_up(table16, index) if table16 is not None else None
        return display, display16
    values = stored
    if stored.dtype.kind == "f":
        values = np.nan_to_num(stored.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    unit = grey.to_unit(values)
    return _quantize(unit, np.uint8), (_quantize(unit, np.uint16) if want16 else None)


def _scale_colour(rgb: np.ndarray, max_in: int, dtype: type[np.unsignedinteger[Any]]) -> np.ndarray:
    top = int(np.iinfo(dtype).max)
    if rgb.dtype == dtype and max_in == top:
        return np.ascontiguousarray(rgb)
    if max_in == 255 and dtype is np.uint16:
        return rgb.astype(np.uint16) * np.uint16(257)  # exact: 255 * 257 == 65535
    scaled = rgb.astype(np.float32)
    scaled *= np.float32(top / max_in)
    scaled += np.float32(0.5)
    np.clip(scaled, 0, top, out=scaled)
    return scaled.astype(dtype)


def _render_colour(
    ds: Dataset, pixels: np.ndarray, photometric: str, bits_stored: int, want16: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(pixels, ds)
            max_in = 255 if rgb.dtype == np.uint8 else 65535
        else:
            rgb = pixels
            if photometric.startswith("YBR"):
                rgb = convert_color_space(pixels, photometric, "RGB")
            max_in = (1 << bits_stored) - 1
    except _DECODE_ERRORS as exc:
        raise _pixel_error("colour cannot be converted to RGB") from exc
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise _pixel_error("colour samples are not RGB")
    rgb = rgb[..., :3]  # a palette with an alpha channel: drop it
    return _scale_colour(rgb, max_in, np.uint8), (_scale_colour(rgb, max_in, np.uint16) if want16 else None)


def _decoder_frames(ds: Dataset, indices: list[int]) -> Iterator[tuple[np.ndarray, Mapping[str, Any]]]:
    """Decode the frames at ``indices``, mapping every decoder failure to InvalidDicom."""
    native = _native_grey(ds)
    if native is not None:
        yield from _native_frames(ds, indices, *native)
        return
    try:
        decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
        frames = decoder.iter_array(ds, indices=indices)
    except _DECODE_ERRORS as exc:
        raise _pixel_error("cannot be decoded") from exc
    for _ in indices:
        try:
            pixels, meta = next(frames)
        except StopIteration:
            raise _pixel_error("has fewer frames than declared") from None
        except _DECODE_ERRORS as exc:
            raise _pixel_error("cannot be decoded") from exc
        if not pixels.dtype.isnative:
            pixels = pixels.astype(pixels.dtype.newbyteorder("="))
        yield pixels, meta


_UNDEFINED_LENGTH = 0xFFFFFFFF
# Native (uncompressed) little-endian syntaxes: their pixel data are the samples themselves.
_NATIVE_LITTLE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})


def _native_grey(ds: Dataset) -> tuple[int, int, int, int, int, int] | None:
    """(frames, rows, columns, bits allocated, bits stored, pixel representation) when ``ds``
    holds native little-endian grayscale samples of 8 or 16 bits in full; None otherwise.

    Those are read straight from the bytes (``_native_frames``), as pydicom's decoder would
    read them but without its per-call set-up, which costs more than the copy on a CT slice.
    Anything else (compressed, big endian, colour, other widths, short or odd data) goes
    through pydicom.
    """
    try:
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        element = ds.get_item(0x7FE00010)  # raw (undecoded) or decoded: both carry the bytes
        if syntax not in _NATIVE_LITTLE or element is None:
            return None
        if isinstance(element, RawDataElement):
            encapsulated = element.length == _UNDEFINED_LENGTH
        else:
            encapsulated = element.is_undefined_length
        if encapsulated:
            return None
        if int(ds.get("SamplesPerPixel") or 1) != 1:
            return None
        if str(ds.get("PhotometricInterpretation") or "").strip().upper() not in (
            "MONOCHROME1",
            "MONOCHROME2",
        ):
            return None
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        representation = int(ds.PixelRepresentation)
        rows, columns, frames = int(ds.Rows), int(ds.Columns), _frame_count(ds)
    except (*_DECODE_ERRORS, InvalidDicom):
        return None  # pydicom's path names the problem
    if allocated not in (8, 16) or not 1 <= stored <= allocated or representation not in (0, 1):
        return None
    if rows < 1 or columns < 1 or len(element.value or b"") < frames * rows * columns * allocated // 8:
        return None
    return frames, rows, columns, allocated, stored, representation


def _native_frames(
    ds: Dataset,
    indices: list[int],
    frames: int,
    rows: int,
    columns: int,
    allocated: int,
    stored: int,
    signed: int,
) -> Iterator[tuple[np.ndarray, Mapping[str, Any]]]:
    """The frames at ``indices`` of native grayscale data, as pydicom decodes them: unsigned
    values masked to Bits Stored, signed values sign-extended from it."""
    unsigned = np.dtype("<u1" if allocated == 8 else "<u2")
    data = np.frombuffer(ds.PixelData, dtype=unsigned, count=frames * rows * columns)
    meta = {
        "bits_allocated": allocated,
        "bits_stored": stored,
        "columns": columns,
        "number_of_frames": frames,
        "photometric_interpretation": str(ds.PhotometricInterpretation).strip().upper(),
        "pixel_representation": signed,
        "rows": rows,
        "samples_per_pixel": 1,
    }
    size = rows * columns
    spare = allocated - stored
    for index in indices:
        if not 0 <= index < frames:
            raise _pixel_error("has fewer frames than declared")
        frame = (
            data[index * size : (index + 1) * size].reshape(rows, columns).astype(unsigned.newbyteorder("="))
        )
        if signed:
            frame = frame.view(np.int8 if allocated == 8 else np.int16)
            if spare:
                frame <<= spare
                frame >>= spare  # arithmetic: the sign bit is copied down
        elif spare:
            frame &= (1 << stored) - 1
        yield frame, meta


def _frame_count(ds: Dataset) -> int:
    try:
        count = int(ds.get("NumberOfFrames") or 1)
    except _DECODE_ERRORS as exc:
        raise _pixel_error("frame count is malformed") from exc
    if count < 1:
        raise _pixel_error("frame count is malformed")
    return count


def _photometric(meta: Mapping[str, Any]) -> str:
    value = meta.get("photometric_interpretation", "")
    return str(getattr(value, "value", value)).strip().upper()


class _DefaultWindow:
    """The default window of one dataset, computed once on first need (middle frame if multi-frame)."""

    def __init__(self, ds: Dataset, count: int) -> None:
        self._ds = ds
        self._count = count
        self._window: Window | None = None

    def get(self, stored: np.ndarray, meta: Mapping[str, Any], frame: int, modality: _Modality) -> Window:
        if self._window is None:
            self._window = self._compute(stored, meta, frame, modality)
        return self._window

    def _compute(
        self, stored: np.ndarray, meta: Mapping[str, Any], frame: int, modality: _Modality
    ) -> Window:
        bits_stored = int(meta.get("bits_stored") or 16)
        if modality.identity and stored.dtype.kind in "iu" and bits_stored <= 8:
            return _stored_range_window(bits_stored, signed=int(meta.get("pixel_representation") or 0) == 1)
        name = str(self._ds.get("Modality") or "").upper()
        if name == "CT":
            return CT_SOFT_TISSUE
        middle = self._count // 2
        if middle != frame:
            stored, _ = next(_decoder_frames(self._ds, [middle]))
            modality = _modality_transform(self._ds, middle)
        if stored.dtype.kind == "f" or modality.lut is not None:
            return default_window(name, modality.apply(stored))
        # Rescale is linear: only a sample needs converting, and the whole frame's extremes map to
        # the extremes of the modality values, so a small bright region is never sampled away.
        flat = stored.reshape(-1)
        sample = modality.apply(flat[:: max(1, flat.size // _SAMPLE_LIMIT)])
        ends = modality.apply(np.array([flat.min(), flat.max()]))
        return _spread_window(sample, float(ends.min()), float(ends.max()))


def render_frames(
    ds: Dataset, options: RenderOptions | None = None, *, indices: Iterable[int] | None = None
) -> Iterator[RenderedFrame]:
    """Render each frame (or those at ``indices``, 0-based) of ``ds`` for display, in order.

    Frames are decoded one at a time, so memory stays at about one frame. Raises InvalidDicom
    (reason ``pixel_data``) when there is no pixel data or it cannot be decoded or rendered, and
    NotFound for an index outside the frames; both may surface while iterating.
    """
    options = options or RenderOptions()
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise _pixel_error("is missing")
    count = _frame_count(ds)
    wanted = list(range(count)) if indices is None else [int(i) for i in indices]
    if any(i < 0 or i >= count for i in wanted):
        raise NotFound("no such frame")
    override = Window(*options.window) if options.window is not None else None
    want16 = options.bits == 16
    per_frame = bool(ds.get("PerFrameFunctionalGroupsSequence"))
    fallback = _DefaultWindow(ds, count)
    shared: _Grey | None = None
    for index, (pixels, meta) in zip(wanted, _decoder_frames(ds, wanted), strict=True):
        photometric = _photometric(meta)
        window: Window | None = None
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            if pixels.ndim != 2:
                raise _pixel_error("shape does not match its photometric interpretation")
            grey = shared
            if grey is None or per_frame:
                modality = _modality_transform(ds, index)
                voi = _voi(ds, index, override, modality)
                grey = _Grey(modality, voi, invert=photometric == "MONOCHROME1")
                shared = None if per_frame else grey
            if grey.voi is None:
                grey = replace(grey, voi=fallback.get(pixels, meta, index, grey.modality))
            window = grey.voi if isinstance(grey.voi, Window) else None
            display, display16 = _render_grey(pixels, grey, want16)
        else:
            bits_stored = int(meta.get("bits_stored") or 8)
            display, display16 = _render_colour(ds, pixels, photometric, bits_stored, want16)
        small = thumbnail(display, options.thumbnail_size) if options.thumbnail_size else None
        yield RenderedFrame(index=index, display=display, display16=display16, thumbnail=small, window=window)
