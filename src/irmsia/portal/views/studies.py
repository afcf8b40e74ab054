"""The study page, the series viewer, and the image files they show (decrypted on the fly).

The study page also shows the newest AI result of each analysed image and the study's
report: its status, ledger registration, downloads (PDF, DICOM SR, FHIR) and, for those who
may sign, the sign-off forms; the viewer shows the AI result of the image on screen. The
forms (analyse, sign off) post with the CSRF token, call the ``Analyze`` and ``Reports`` use
cases, put a one-shot message in the session and redirect back (post/redirect/get).

Window/level: the viewer shows the stored 8-bit PNG while the window is the automatic one,
and asks ``/render`` for any other window; the server renders that frame from the
de-identified DICOM (see ``irmsia.portal.windowing``). Both go through the ``Retrieve`` use
case, so each is authorised and audited like the REST downloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.responses import Response

from irmsia.ai.schema import AnalysisResult
from irmsia.db.imaging import Instance, Series
from irmsia.domain.render import window_presets
from irmsia.errors import Conflict, InvalidRequest
from irmsia.portal.deps import csrf_form, current_session, get_container, page_ctx
from irmsia.portal.error_pages import PortalRoute
from irmsia.portal.forms import number, text_or_none
from irmsia.portal.pages import render
from irmsia.portal.sessions import PortalSession
from irmsia.portal.windowing import render_window
from irmsia.reports import model as rm
from irmsia.reports.amend import FindingEdit
from irmsia.security.policy import Permission, Principal
from irmsia.usecases.analyze import StoredAnalysis
from irmsia.usecases.context import RequestContext
from irmsia.usecases.retrieve import Download

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

Id = Annotated[str, Path(max_length=64)]
Frame = Annotated[int, Path(ge=0, le=1_000_000)]
FILE_HEADERS = {"Cache-Control": "private, no-store"}
REPORT_FILES = {"pdf": "pdf", "sr": "dcm", "fhir": "fhir.json"}  # format -> file extension
SEVERITIES = tuple(severity.value for severity in rm.Severity)
EDITABLE_FINDINGS = 400  # the sign-off form lists at most this many findings (form field limit)
LongForm = Annotated[str, Form(max_length=20_000)]
ShortForm = Annotated[str, Form(max_length=256)]


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


@dataclass(frozen=True)
class AIRow:
    """The newest AI result of one image, with where the image is in the study."""

    image_id: str
    series_id: str
    label: str  # "Series 2 · image 14"
    result: AnalysisResult

    @property
    def probabilities(self) -> list[tuple[str, float | None]]:
        """Label probabilities, most probable first; labels the weights leave untrained (None) last."""
        items = self.result.label_probabilities.items()
        return sorted(items, key=lambda item: (item[1] is None, -(item[1] or 0.0), item[0]))


def ai_rows(analyses: Sequence[StoredAnalysis], cards: Sequence[SeriesCard]) -> list[AIRow]:
    """The results in the study's order (series, then instance), labelled by position."""
    places: dict[str, tuple[int, int, str]] = {}
    for card_number, card in enumerate(cards):
        series = f"Series {card.number}" if card.number is not None else f"Series {card_number + 1}"
        for position, instance in enumerate(card.instances, 1):
            number = instance.instance_number if instance.instance_number is not None else position
            places[instance.id] = (card_number, position, f"{series} · image {number}")
    rows = [
        (places[a.image_id], AIRow(a.image_id, a.series_id, places[a.image_id][2], a.result))
        for a in analyses
        if a.image_id in places
    ]
    return [row for _, row in sorted(rows, key=lambda item: item[0][:2])]


@dataclass(frozen=True)
class EditableFinding:
    """One finding in the sign-off form: which image, its position, and what it says."""

    image_number: int
    image_id: str
    index: int
    finding: rm.Finding


def editable_findings(report: rm.Report) -> list[EditableFinding]:
    return [
        EditableFinding(number, image.image_id, index, finding)
        for number, image in enumerate(report.images, 1)
        for index, finding in enumerate(image.findings)
    ]


def _can(principal: Principal | None, permission: Permission) -> bool:
    # Which panels to offer; the use cases still authorise every read and action.
    return principal is not None and principal.can(permission)


@router.get("/portal/studies/{study_id}", name="portal.study")
def study_page(request: Request, study_id: Id, ctx: RequestContext = Depends(page_ctx)) -> Response:
    container = get_container(request)
    study = container.search.study(ctx, study_id)
    cards = series_cards(study.series)
    context: dict[str, Any] = {
        "title": f"Study {study.study_date or ''}".strip(),
        "study": study,
        "cards": cards,
        "analysable": sum(
            1 for card in cards for i in card.instances if i.frames > 0 and i.status == "stored"
        ),
        "severities": SEVERITIES,
    }
    if _can(ctx.principal, Permission.READ_RESULTS):
        rows = ai_rows(container.analyze.latest_for_study(ctx, study_id), cards)
        report = container.reports.current(ctx, study_id)
        findings = editable_findings(report) if report else []
        context.update(
            findings=rows,
            failed=sum(1 for row in rows if row.result.status != "ok"),
            report=report,
            banner=rm.status_banner(report) if report else "",
            editable=findings[:EDITABLE_FINDINGS],
            editable_total=len(findings),
        )
    return render(request, "study.html", context)


def _back_to(study_id: str, series_id: str | None, image_id: str | None) -> Response:
    if series_id and image_id:
        return RedirectResponse(f"/portal/series/{series_id}?image={image_id}#ai-side", status_code=303)
    return RedirectResponse(f"/portal/studies/{study_id}#ai-title", status_code=303)


@router.post(
    "/portal/studies/{study_id}/analyze", name="portal.study_analyze", dependencies=[Depends(csrf_form)]
)
def analyze_study(
    request: Request,
    study_id: Id,
    image: ShortForm = "",
    back: ShortForm = "",
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    """Run the AI on the study's images, or on one of them (``image``), then go back.

    ``back=viewer`` (with ``image``) returns to that image in the viewer.
    """
    image_id = text_or_none(image, max_length=64)
    done = get_container(request).analyze.analyze_study(
        ctx, study_id, image_ids=[image_id] if image_id else ()
    )
    session.flash(*analysis_message(done.results, done.images))
    series_id = done.results[0].series_id if back == "viewer" and image_id and done.results else None
    return _back_to(study_id, series_id, image_id)


def analysis_message(results: Sequence[StoredAnalysis], candidates: int) -> tuple[str, str]:
    """The flash after an analysis: how many images, and why those that failed did."""
    failed = [item.result for item in results if item.result.status != "ok"]
    count = len(results)
    images = f"{count} image{'s' if count != 1 else ''}"
    of = f" of {candidates} (evenly spaced through the study)" if 1 < count < candidates else ""
    if not failed:
        return "success", f"Analysed {images}{of}. The results are AI-generated, not for clinical use."
    reasons = "; ".join(sorted({f"{r.error.message} ({r.error.code})" for r in failed if r.error})[:3])
    failures = f"{len(failed)} analysis failed" if len(failed) == 1 else f"{len(failed)} analyses failed"
    return "error", f"Analysed {images}{of}; {failures}: {reasons}"


@router.get("/portal/studies/{study_id}/report/{fmt}", name="portal.report_file")
def report_file(
    request: Request,
    study_id: Id,
    fmt: Literal["pdf", "sr", "fhir"],
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    """The study's report as PDF, DICOM SR or FHIR R4 bundle, named by its report id."""
    rendered = get_container(request).reports.render(ctx, study_id, fmt)
    headers = {
        **FILE_HEADERS,
        "Content-Disposition": f'attachment; filename="{rendered.report.report_id}.{REPORT_FILES[fmt]}"',
    }
    return Response(rendered.content, media_type=rendered.media_type, headers=headers)


def finding_edits(values: Sequence[str]) -> list[FindingEdit]:
    """Parse the form's ``finding`` fields: ``<image id>:<position>:<severity or "remove">``."""
    edits = []
    for value in values:
        image_id, _, rest = value.partition(":")
        index, _, choice = rest.partition(":")
        if not image_id or not index.isdigit() or len(index) > 4 or choice not in (*SEVERITIES, "remove"):
            raise InvalidRequest("a finding field of the sign-off form is malformed")
        if choice == "remove":
            edits.append(FindingEdit(image_id, int(index), remove=True))
        else:
            edits.append(FindingEdit(image_id, int(index), severity=choice))
    return edits


@router.post("/portal/studies/{study_id}/sign", name="portal.report_sign", dependencies=[Depends(csrf_form)])
def sign_report(
    request: Request,
    study_id: Id,
    decision: ShortForm = "",
    narrative: LongForm = "",
    diagnosis: ShortForm = "",
    comment: Annotated[str, Form(max_length=4_000)] = "",
    finding: Annotated[list[str] | None, Form(max_length=EDITABLE_FINDINGS)] = None,
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    """Confirm, edit or reject the study's report (radiologists and admins), then go back.

    A report signed meanwhile (409) or a sign-off the use case refuses (400) comes back as a
    message on the study page; a caller who may not sign gets the 403 page.
    """
    try:
        report = get_container(request).reports.sign(
            ctx,
            study_id,
            decision,
            narrative=narrative if decision == "edit" else None,
            diagnosis=diagnosis if decision == "edit" else None,
            findings=finding_edits(finding or []) if decision == "edit" else (),
            comment=comment,
        )
    except Conflict:
        session.flash("error", "This report had already been signed, so your sign-off was not recorded.")
        return RedirectResponse(f"/portal/studies/{study_id}#report-title", status_code=303)
    except InvalidRequest as exc:
        session.flash("error", f"Not signed: {exc.detail}.")
        return RedirectResponse(f"/portal/studies/{study_id}#report-title", status_code=303)
    session.flash("success", f"Report signed: {rm.status_banner(report)}.")
    return RedirectResponse(f"/portal/studies/{study_id}#report-title", status_code=303)


def ai_summary(result: AnalysisResult) -> dict[str, Any]:
    """One AI result as the viewer's side panel shows it (JSON-compatible)."""
    provenance = result.provenance
    return {
        "status": result.status,
        "error": result.error.message if result.error else None,
        "error_code": result.error.code if result.error else None,
        "risk": result.risk_score,
        "diagnosis": result.suggested_diagnosis,
        "findings": [
            {
                "description": f.description,
                "location": f.location,
                "severity": f.severity.value,
                "confidence": f.confidence,
            }
            for f in result.findings
        ],
        "recommendations": list(result.recommendations),
        "provider": provenance.provider,
        "model": f"{provenance.model} {provenance.version}",
        "simulated": result.simulated,
        "when": result.timestamp.strftime("%Y-%m-%d %H:%M UTC"),
    }


def viewer_data(
    series: Series,
    instances: Sequence[Instance],
    analyses: Sequence[StoredAnalysis] = (),
    start_image: str | None = None,
) -> dict[str, Any]:
    """What viewer.js needs: the slices in order, URL patterns, the modality's window presets,
    the newest AI result of each image of the series (``ai``, by image id; absent when the
    caller may not read results) and the slice to start on (the first of ``start_image``)."""
    slices = [
        {"image": instance.id, "frame": frame, "number": instance.instance_number, "status": instance.status}
        for instance in instances
        for frame in range(instance.frames)
    ]
    start = next((n for n, item in enumerate(slices) if item["image"] == start_image), 0)
    ai = {a.image_id: ai_summary(a.result) for a in analyses if a.series_id == series.id}
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
    return {"slices": slices, "presets": presets, "modality": series.modality, "ai": ai, "start": start}


@router.get("/portal/series/{series_id}", name="portal.viewer")
def viewer(
    request: Request,
    series_id: Id,
    image: Annotated[str | None, Query(max_length=64)] = None,
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    """The series viewer; ``image`` (an image id of the series) is the slice to open on."""
    container = get_container(request)
    series, instances = container.search.series(ctx, series_id)
    reads_ai = _can(ctx.principal, Permission.READ_RESULTS)
    analyses = container.analyze.latest_for_study(ctx, series.study_id) if reads_ai else []
    return render(
        request,
        "viewer.html",
        {
            "title": f"Series {series.series_number or ''} {series.modality}".strip(),
            "series": series,
            "instances": instances,
            "data": viewer_data(series, instances, analyses, image),
            "reads_ai": reads_ai,
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
