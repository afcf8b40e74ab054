"""Re-render one frame of a de-identified DICOM object with a requested window (pure).

The stored PNGs are 8-bit renders through one window (the file's, else the modality
default), and the optional 16-bit PNGs are the same windowed output at more depth, so no
stored image can show, say, a lung window of a CT stored with a soft-tissue one. The viewer
therefore asks the server to render from the de-identified DICOM whenever the window
changes; this module is that render, on bytes in memory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from irmsia.domain.png import encode_png
from irmsia.domain.render import RenderOptions, Window, render_frames
from irmsia.errors import InvalidDicom

PNG_LEVEL = 1  # fast zlib: the frame is rendered per request, not stored


@dataclass(frozen=True)
class WindowedFrame:
    """A rendered frame as PNG and the window applied (None for colour images)."""

    png: bytes
    window: Window | None


def render_window(dicom: bytes, frame: int, window: tuple[float, float] | None) -> WindowedFrame:
    """Render frame ``frame`` (0-based) of a Part 10 object through ``window`` (centre, width).

    ``window`` None renders as the stored PNGs were (the file's window, else the default).
    Raises ``InvalidRequest`` for an unusable window, ``NotFound`` for a frame outside the
    object and ``InvalidDicom`` when the object cannot be read or rendered.
    """
    options = RenderOptions(window=window, thumbnail_size=None)
    try:
        dataset = dcmread(io.BytesIO(dicom))
    except (InvalidDicomError, ValueError, EOFError) as exc:
        raise InvalidDicom(
            f"the stored object cannot be read ({type(exc).__name__})", reason="not_dicom"
        ) from None
    rendered = next(render_frames(dataset, options, indices=[frame]))
    return WindowedFrame(png=encode_png(rendered.display, level=PNG_LEVEL), window=rendered.window)
