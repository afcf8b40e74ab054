"""The study page, the series viewer, and the image files they show (decrypted on the fly).

Window/level: the viewer shows the stored 8-bit PNG while the window is the automatic one,
and asks ``/render`` for any other window; the server renders that frame from the
de-identified DICOM (see ``irmsia.portal.windowing``). Both go through the ``Retrieve`` use
case, so each is authorised and audited like the REST downloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from irmsia.db.imaging import Instance, Series
from irmsia.domain.render import window_presets
from irmsia.errors import InvalidRequest
from irmsia.portal.deps import get_container, page_ctx
from irmsia.portal.error_pages import PortalRoute
from irmsia.portal.forms import number
from irmsia.portal.pages import render
from irmsia.portal.windowing import render_window
from irmsia.usecases.context import RequestContext
from irmsia.usecases.retrieve import Download

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

Id = Annotated[str, Path(max_length=64)]
Frame = Annotated[int, Path(ge=0, le=1_000_000)]
FILE_HEADERS = {"Cache-Control": "private, no-store"}


@dataclass(frozen=True)
class SeriesCard:
    """What the study page shows of one series."""

    id: str
    number: int | None
    modality: str
    description: str | None
    body_part: str | None
    instances: Sequence[Instance]
    thumbnail_of: str | None  # the image whose thumbnail stands for the series

    @property
    def frames(self) -> int:
        return sum(instance.frames for instance in self.instances)


def _in_order(instances: Sequence[Instance]) -> list[Instance]:
    return sorted(instances, key=lambda i: (i.instance_number is None, i.instance_number or 0, i.created_at))


def series_cards(series: Sequence[Series]) -> list[SeriesCard]:
    cards = []
    for item in sorted(series, key=lambda s: (s.series_number is None, s.series_number or 0)):
        instances = _in_order(item.instances)
        if not instances:
            continue
        with_pixels = [i for i in instances if i.frames > 0]
        cards.append(
            SeriesCard(
                id=item.id,
                number=item.series_number,
                modality=item.modality,
                description=item.description,
                body_part=item.body_part,
                instances=instances,
                thumbnail_of=with_pixels[len(with_pixels) // 2].id if with_pixels else None,
            )
        )
    return cards


@router.get("/portal/studies/{study_id}", name="portal.study")
def study_page(request: Request, study_id: Id, ctx: RequestContext = Depends(page_ctx)) -> Response:
    study = get_container(request).search.study(ctx, study_id)
    return render(
        request,
        "study.html",
        {
            "title": f"Study {study.study_date or ''}".strip(),
            "study": study,
            "cards": series_cards(study.series),
        },
    )


def viewer_data(series: Series, instances: Sequence[Instance]) -> dict[str, Any]:
    """What viewer.js needs: the slices in order, URL patterns and the modality's window presets."""
    slices = [
        {"image": instance.id, "frame": frame, "number": instance.instance_number, "status": instance.status}
        for instance in instances
        for frame in range(instance.frames)
    ]
    presets = [
        {
            "name": preset.name,
            "center": preset.window.center if preset.window else None,
            "width": preset.window.width if preset.window else None,
        }
        for preset in window_presets(series.modality)
    ]
    if all(p["center"] is not None for p in presets):
        presets.insert(0, {"name": "auto", "center": None, "width": None})
    return {"slices": slices, "presets": presets, "modality": series.modality}


@router.get("/portal/series/{series_id}", name="portal.viewer")
def viewer(request: Request, series_id: Id, ctx: RequestContext = Depends(page_ctx)) -> Response:
    series, instances = get_container(request).search.series(ctx, series_id)
    return render(
        request,
        "viewer.html",
        {
            "title": f"Series {series.series_number or ''} {series.modality}".strip(),
            "series": series,
            "instances": instances,
            "data": viewer_data(series, instances),
        },
    )


def _send(download: Download, filename: str | None = None) -> Response:
    headers = {**FILE_HEADERS, "Content-Length": str(download.size)}
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return StreamingResponse(download.chunks, media_type=download.media_type, headers=headers)


@router.get("/portal/images/{image_id}/thumbnail", name="portal.thumbnail")
def thumbnail(request: Request, image_id: Id, ctx: RequestContext = Depends(page_ctx)) -> Response:
    return _send(get_container(request).retrieve.download(ctx, image_id, "thumbnail"))


@router.get("/portal/images/{image_id}/frames/{frame}", name="portal.frame")
def frame_png(
    request: Request, image_id: Id, frame: Frame, ctx: RequestContext = Depends(page_ctx)
) -> Response:
    """The stored 8-bit PNG of one frame (the automatic window)."""
    return _send(get_container(request).retrieve.download(ctx, image_id, "png", frame))


@router.get("/portal/images/{image_id}/frames/{frame}/render", name="portal.render")
def render_frame(
    request: Request,
    image_id: Id,
    frame: Frame,
    center: Annotated[str | None, Query(max_length=32)] = None,
    width: Annotated[str | None, Query(max_length=32)] = None,
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    """One frame rendered through the window ``center``/``width`` (modality units, e.g. HU).

    Without a window the automatic one is used. The window applied comes back in the
    ``X-Window-Center`` and ``X-Window-Width`` headers (absent for colour images).
    """
    wanted_center, wanted_width = number(center, "center"), number(width, "width")
    if (wanted_center is None) != (wanted_width is None):
        raise InvalidRequest("give both center and width, or neither")
    window = (wanted_center, wanted_width) if wanted_center is not None and wanted_width is not None else None
    download = get_container(request).retrieve.download(ctx, image_id, "dicom")
    rendered = render_window(b"".join(download.chunks), frame, window)
    headers = dict(FILE_HEADERS)
    if rendered.window is not None:
        headers["X-Window-Center"] = f"{rendered.window.center:g}"
        headers["X-Window-Width"] = f"{rendered.window.width:g}"
    return Response(rendered.png, media_type="image/png", headers=headers)


@router.get("/portal/images/{image_id}/dicom", name="portal.dicom")
def dicom(request: Request, image_id: Id, ctx: RequestContext = Depends(page_ctx)) -> Response:
    """The de-identified DICOM file, named by its opaque id."""
    return _send(get_container(request).retrieve.download(ctx, image_id, "dicom"), f"{image_id}.dcm")
