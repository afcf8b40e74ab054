"""PNG encoding of display images: lossless round trips, both back ends, rejected input."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from irmsia.domain import png
from irmsia.domain.png import decode_png, encode_png
from irmsia.errors import InputError

RNG = np.random.default_rng(42)

ARRAYS: dict[str, np.ndarray] = {
    "grey8": RNG.integers(0, 256, size=(31, 17), dtype=np.uint8),
    "grey16": RNG.integers(0, 65536, size=(31, 17), dtype=np.uint16),
    "rgb8": RNG.integers(0, 256, size=(9, 13, 3), dtype=np.uint8),
    "rgb16": RNG.integers(0, 65536, size=(9, 13, 3), dtype=np.uint16),
    "rgba8": RNG.integers(0, 256, size=(5, 6, 4), dtype=np.uint8),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_png_round_trip_is_lossless(name: str) -> None:
    array = ARRAYS[name]
    data = encode_png(array)
    decoded = decode_png(data)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert decoded.dtype == array.dtype
    assert np.array_equal(decoded, array)


def test_sixteen_bit_png_is_read_the_same_by_another_decoder() -> None:
    array = ARRAYS["grey16"]
    with Image.open(io.BytesIO(encode_png(array))) as image:
        assert np.array_equal(np.asarray(image).astype(np.uint16), array)


@pytest.mark.parametrize(("name", "mode"), [("grey8", "L"), ("rgb8", "RGB"), ("rgba8", "RGBA")])
def test_eight_bit_pngs_are_read_the_same_by_another_decoder(name: str, mode: str) -> None:
    array = ARRAYS[name]
    with Image.open(io.BytesIO(encode_png(array))) as image:
        image.load()  # Pillow checks every chunk's CRC while reading
        assert image.mode == mode
        assert np.array_equal(np.asarray(image), array)


@pytest.mark.parametrize(
    ("name", "bit_depth", "colour_type"),
    [("grey8", 8, 0), ("grey16", 16, 0), ("rgb8", 8, 2), ("rgb16", 16, 2), ("rgba8", 8, 6)],
)
def test_png_header_describes_the_pixels(name: str, bit_depth: int, colour_type: int) -> None:
    array = ARRAYS[name]
    data = encode_png(array)
    assert data[12:16] == b"IHDR"
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    assert (width, height) == (array.shape[1], array.shape[0])
    assert (depth, colour, compression, filtering, interlace) == (bit_depth, colour_type, 0, 0, 0)
    assert data.endswith(b"IEND\xaeB`\x82")  # the IEND chunk with its fixed CRC


def test_long_pixel_streams_span_several_idat_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    array = ARRAYS["rgb16"]
    monkeypatch.setattr(png, "_MAX_CHUNK", 64)
    data = encode_png(array)
    assert data.count(b"IDAT") > 2
    assert np.array_equal(decode_png(data), array)
    rgb8 = ARRAYS["rgb8"]
    with Image.open(io.BytesIO(encode_png(rgb8))) as image:
        image.load()
        assert np.array_equal(np.asarray(image), rgb8)


def test_a_corrupted_byte_fails_the_checksum() -> None:
    data = bytearray(encode_png(ARRAYS["grey8"]))
    data[45] ^= 0xFF  # inside the IDAT chunk's data
    with pytest.raises(InputError):
        decode_png(bytes(data))


def test_level_zero_stores_the_rows_uncompressed_and_losslessly() -> None:
    array = ARRAYS["grey16"]
    data = encode_png(array, level=0)
    assert len(data) > array.nbytes  # the rows, their filter bytes and the PNG framing
    assert np.array_equal(decode_png(data), array)


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_libpng_encoder_round_trips_when_libdeflate_is_missing(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    array = ARRAYS[name]
    monkeypatch.setattr(png, "_deflate", False)
    data = encode_png(array)
    assert np.array_equal(decode_png(data), array)
    monkeypatch.undo()
    assert np.array_equal(decode_png(encode_png(array)), array)  # and libdeflate's decodes the same


def test_single_channel_third_axis_is_encoded_as_grayscale() -> None:
    array = ARRAYS["grey8"][:, :, None]
    assert np.array_equal(decode_png(encode_png(array)), array[:, :, 0])


def test_non_contiguous_arrays_are_encoded() -> None:
    array = ARRAYS["grey16"][::2, ::3]
    assert np.array_equal(decode_png(encode_png(array)), array)


def test_higher_level_is_accepted_and_still_lossless() -> None:
    array = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    fast, small = encode_png(array, level=1), encode_png(array, level=9)
    assert np.array_equal(decode_png(small), array)
    assert len(small) <= len(fast)


@pytest.mark.parametrize(
    ("array", "error"),
    [
        (np.zeros((4, 4), dtype=np.float32), TypeError),
        (np.zeros((4, 4), dtype=np.int16), TypeError),
        (np.zeros((4, 4, 2), dtype=np.uint8), ValueError),
        (np.zeros((2, 4, 4, 3), dtype=np.uint8), ValueError),
        (np.zeros((0, 4), dtype=np.uint8), ValueError),
    ],
)
def test_unsupported_arrays_are_refused(array: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_png(array)


def test_level_outside_zlib_range_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_png(ARRAYS["grey8"], level=10)


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_decoding_something_that_is_not_a_png_raises_input_error(data: bytes) -> None:
    with pytest.raises(InputError):
        decode_png(data)


def test_truncated_png_raises_input_error() -> None:
    data = encode_png(ARRAYS["rgb8"])
    with pytest.raises(InputError):
        decode_png(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["grey8", "grey16", "rgb8"])
def test_pillow_fallback_round_trips_when_imagecodecs_is_missing(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    array = ARRAYS[name]
    monkeypatch.setattr(png, "_codecs", None)
    monkeypatch.setattr(png, "_deflate", False)
    decoded = decode_png(encode_png(array))
    assert decoded.dtype == array.dtype
    assert np.array_equal(decoded, array)


def test_pillow_fallback_refuses_sixteen_bit_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(png, "_codecs", None)
    monkeypatch.setattr(png, "_deflate", False)
    with pytest.raises(ValueError):
        encode_png(ARRAYS["rgb16"])


def test_pillow_fallback_reports_corrupt_data_as_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(png, "_codecs", None)
    with pytest.raises(InputError):
        decode_png(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
