"""PNG encoding and decoding of display images.

PNG encoding is the dominant cost of ingest. Every row gets the same filter, UP (the fastest or
close to it, and the smallest or near-smallest grayscale files on pydicom's sample CT, MR, NM and
US images and on bench/render.py's phantoms), instead of libpng's per-row filter search, and the
filtered rows are compressed by libdeflate (through ``imagecodecs``) into the zlib stream of the
IDAT chunks. At level 1 libdeflate is 25-60 % faster than zlib at level 1 (libpng's encoder) for
1-2 % larger files (bench/render.py: CT 8-bit 2.1 -> 1.6 ms, 16-bit 6.0 -> 3.6 ms; noisy 8-bit
radiographs 91 -> 52 ms for 10 % more bytes, where libpng used zlib's RLE strategy). The file is
a plain PNG (IHDR, IDAT…, IEND) that any decoder reads; decoding uses libpng.

Without libdeflate, libpng through ``imagecodecs`` encodes (zlib strategy RLE for 8-bit
grayscale: 10-40 % faster than the default at the same size; colour and 16-bit keep the default,
where RLE made files 10-50 % larger). Pillow is used only when ``imagecodecs`` is not installed
(slower; cannot write 16-bit colour).
"""

from __future__ import annotations

import io
import struct
import zlib
from types import ModuleType

import numpy as np

from irmsia.errors import InputError

_codecs: ModuleType | None
try:
    import imagecodecs as _codecs
except ImportError:  # pragma: no cover - imagecodecs is a declared dependency
    _codecs = None
# libdeflate is part of imagecodecs' wheels; a build without it falls back to libpng.
_deflate = _codecs is not None and bool(_codecs.DEFLATE.available)

_FILTER_UP = 32  # libpng's PNG_FILTER_UP flag (imagecodecs.PNG.FILTER.UP)
_ROW_FILTER_UP = 2  # the filter type byte that starts each filtered row (PNG spec, 9.2)
_MAX_CHUNK = 1 << 30  # bytes of compressed pixels per IDAT chunk
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # samples per pixel -> grayscale, truecolour, truecolour + alpha
_STRATEGY_DEFAULT = 0  # zlib Z_DEFAULT_STRATEGY
_STRATEGY_RLE = 3  # zlib Z_RLE
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check(array: np.ndarray, level: int) -> np.ndarray:
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError("PNG pixels must be uint8 or uint16")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError("PNG pixels must be (rows, columns) or (rows, columns, 3 or 4)")
    if array.size == 0:
        raise ValueError("PNG pixels must not be empty")
    if not 0 <= level <= 9:
        raise ValueError("PNG compression level must be 0..9")
    return np.ascontiguousarray(array)


def encode_png(array: np.ndarray, *, level: int = 1) -> bytes:
    """Encode uint8 or uint16 pixels, grayscale (rows, columns) or RGB(A) (rows, columns, 3|4), as PNG.

    ``level`` is the compression level 0..9 (0 stores the rows uncompressed); 1 is much faster
    than 6 for a few percent more bytes. Lossless. Raises TypeError/ValueError for arrays of
    another dtype or shape (a caller bug).
    """
    array = _check(array, level)
    if _deflate:
        return _deflate_encode(array, level)
    if _codecs is not None:
        grey8 = array.ndim == 2 and array.dtype == np.uint8
        strategy = _STRATEGY_RLE if grey8 else _STRATEGY_DEFAULT
        return bytes(_codecs.png_encode(array, level=level, filter=_FILTER_UP, strategy=strategy))
    return _pillow_encode(array, level)


def _deflate_encode(array: np.ndarray, level: int) -> bytes:
    """The PNG of ``array``: UP-filtered rows, compressed by libdeflate at ``level``."""
    assert _codecs is not None
    rows, columns = array.shape[:2]
    samples = array.shape[2] if array.ndim == 3 else 1
    if array.dtype == np.uint16:
        array = array.astype(">u2")  # PNG samples are big-endian
    raw = array.reshape(rows, -1).view(np.uint8)
    # UP: each byte minus the byte above it, modulo 256, whatever the sample layout.
    filtered = np.empty((rows, raw.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = _ROW_FILTER_UP
    filtered[0, 1:] = raw[0]
    np.subtract(raw[1:], raw[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", columns, rows, 8 * array.dtype.itemsize, _COLOUR_TYPES[samples], 0, 0, 0)
    pixels = memoryview(_codecs.deflate_encode(filtered, level=level))
    # A chunk holds at most 2**31 - 1 bytes: the zlib stream may span several IDAT chunks.
    idat = [
        part
        for start in range(0, len(pixels), _MAX_CHUNK)
        for part in _chunk(b"IDAT", pixels[start : start + _MAX_CHUNK])
    ]
    return b"".join([_PNG_SIGNATURE, *_chunk(b"IHDR", header), *idat, *_chunk(b"IEND", b"")])


def _chunk(kind: bytes, data: bytes | memoryview) -> tuple[bytes, bytes, bytes | memoryview, bytes]:
    """A PNG chunk's parts: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes to an array: uint8 or uint16, (rows, columns) or (rows, columns, channels).

    Raises InputError when the bytes are not a valid PNG.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise InputError("not a PNG image")
    if _codecs is not None:
        try:
            decoded: np.ndarray = _codecs.png_decode(data)
        except (_codecs.PngError, ValueError) as exc:
            raise InputError("PNG image is corrupt") from exc
        return decoded
    return _pillow_decode(data)


def _pillow_encode(array: np.ndarray, level: int) -> bytes:
    from PIL import Image  # imported only on this fallback path

    if array.dtype == np.uint16 and array.ndim == 3:
        raise ValueError("16-bit colour PNG needs imagecodecs")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def _pillow_decode(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode in ("I;16", "I;16B", "I"):
                return np.asarray(image, dtype=np.uint16)
            return np.asarray(image.convert("RGB") if image.mode == "P" else image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError("PNG image is corrupt") from exc
