"""Turn an ``ImageInput`` into the tensor a provider's ``InputSpec`` declares.

Pure array work (numpy, and Pillow for resampling): no file, network or clock access. The steps,
in order: pick the representation (display 0..255 or modality values) → channels (luminance or
repeat) → geometry (centre crop / pad to a square, then bilinear antialiased resize) → values
(linear map onto ``value_range``, then ``(x - mean) / std``) → layout and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from irmsia.ai.base import ImageInput, InputSpec, PreparedImage
from irmsia.errors import InputError

# ITU-R BT.601 luma weights: what Pillow's "L" conversion uses, so grey matches other viewers.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def prepare(image: ImageInput, spec: InputSpec) -> PreparedImage:
    """Build the tensor ``spec`` describes from ``image``.

    Raises ``InputError`` when the spec asks for modality values the image does not have
    (colour images, or values that were not decoded).
    """
    if spec.representation == "modality":
        if image.modality_values is None:
            raise InputError("this provider needs modality values, which this image does not have")
        array: np.ndarray = image.modality_values.astype(np.float32, copy=False)
    else:
        array = image.display
    if spec.channels is None:
        tensor = array if spec.dtype == "uint8" and array.dtype == np.uint8 else _values(array, spec)
    else:
        planes = _channels(array, spec.channels)
        planes = [_geometry(plane, spec) for plane in planes]
        stacked = np.stack(planes, axis=0 if spec.layout == "CHW" else -1)
        tensor = _values(stacked, spec, channel_axis=0 if spec.layout == "CHW" else -1)
    return PreparedImage(
        tensor=tensor,
        meta=image.meta,
        display=image.display if spec.keep_display else None,
        modality_values=image.modality_values if spec.keep_modality else None,
    )


def stack(images: Sequence[PreparedImage]) -> np.ndarray:
    """One batch array (N, ...) from prepared images of equal shape; raises InputError otherwise."""
    shapes = {image.tensor.shape for image in images}
    if len(shapes) != 1:
        raise InputError("images in one batch must be prepared to the same shape")
    return np.stack([image.tensor for image in images], axis=0)


def _channels(array: np.ndarray, channels: int) -> list[np.ndarray]:
    """The image as ``channels`` float32 planes."""
    if array.ndim == 3:
        rgb = array[..., :3].astype(np.float32)
        if channels == 3:
            return [rgb[..., i] for i in range(3)]
        return [rgb @ _LUMA]
    plane = array.astype(np.float32)
    return [plane] * channels


def _geometry(plane: np.ndarray, spec: InputSpec) -> np.ndarray:
    if spec.size is None:
        return plane
    rows, columns = plane.shape
    if spec.resize == "center_crop" and rows != columns:
        side = min(rows, columns)
        top, left = (rows - side) // 2, (columns - side) // 2
        plane = plane[top : top + side, left : left + side]
    elif spec.resize == "pad" and rows != columns:
        side = max(rows, columns)
        padded = np.full((side, side), plane.min(), dtype=np.float32)
        top, left = (side - rows) // 2, (side - columns) // 2
        padded[top : top + rows, left : left + columns] = plane
        plane = padded
    height, width = spec.size
    if plane.shape == (height, width):
        return plane
    # Pillow's BILINEAR widens its kernel when shrinking (antialiasing), like skimage's resize
    # with anti_aliasing that the published chest X-ray models were trained with.
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def _values(array: np.ndarray, spec: InputSpec, channel_axis: int = 0) -> np.ndarray:
    if spec.dtype == "uint8":
        return np.clip(np.rint(array), 0, 255).astype(np.uint8)
    out = array.astype(np.float32, copy=True)
    if spec.representation == "modality":
        low, high = spec.modality_clip or (float(out.min()), float(out.max()))
        np.clip(out, low, high, out=out)
        target = spec.value_range or (0.0, 1.0)
        scale = (target[1] - target[0]) / (high - low) if high > low else 0.0
        out -= np.float32(low)
        out *= np.float32(scale)
        out += np.float32(target[0])
    elif spec.value_range is not None:
        low, high = spec.value_range
        out *= np.float32((high - low) / 255.0)
        out += np.float32(low)
    if spec.mean is not None and spec.std is not None:
        shape = [1] * out.ndim
        if len(spec.mean) > 1 and spec.channels is not None:
            shape[channel_axis] = len(spec.mean)
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(shape)
        std = np.asarray(spec.std, dtype=np.float32).reshape(shape)
        out = (out - mean) / std
    return out
