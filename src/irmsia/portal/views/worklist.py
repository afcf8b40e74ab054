"""The worklist (studies by patient pseudonym, date range, modality, AI status and risk) and the
patient timeline, each study with its AI status and highest risk (``irmsia.db.aistatus``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from irmsia.bootstrap import Container
from irmsia.db.aistatus import StudyAI
from irmsia.db.imaging import Study
from irmsia.db.index import StudyFilter
from irmsia.errors import InvalidRequest, NotFound
from irmsia.portal.deps import get_container, page_ctx
from irmsia.portal.error_pages import PortalRoute
from irmsia.portal.forms import date_or_none, date_range, number, text_or_none
from irmsia.portal.pages import render
from irmsia.portal.paging import Pagination, offset_of, page_number
from irmsia.security.policy import Permission
from irmsia.usecases.context import RequestContext

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PER_PAGE = 25
TIMELINE_LIMIT = 500
MODALITIES = ("CT", "MR", "CR", "DX", "MG", "US", "NM", "PT", "XA", "RF", "OT")
SORTS = {"newest": "Newest first", "oldest": "Oldest first", "risk": "Highest AI risk first"}
AI_STATUSES = {
    "not_analysed": "Not analysed",
    "analysed": "Analysed, awaiting sign-off",
    "error": "Analysis failed",
    "signed": "Signed off",
}
_MODALITY = re.compile(r"^[A-Za-z]{2,16}$")

ShortQuery = Annotated[str | None, Query(max_length=64)]


@router.get("/portal/worklist", name="portal.worklist")
def worklist(
    request: Request,
    patient: ShortQuery = None,
    date_from: ShortQuery = None,
    date_to: ShortQuery = None,
    modality: ShortQuery = None,
    ai: ShortQuery = None,
    min_risk: ShortQuery = None,
    sort: ShortQuery = None,
    page: ShortQuery = None,
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    first, last = date_range(date_or_none(date_from, "From"), date_or_none(date_to, "To"))
    wanted_modality = text_or_none(modality, max_length=16)
    if wanted_modality and not _MODALITY.fullmatch(wanted_modality):
        raise InvalidRequest("modality must be 2-16 letters, e.g. CT")
    status = text_or_none(ai, max_length=16)
    if status is not None and status not in AI_STATUSES:
        raise InvalidRequest("choose an AI status from the list")
    lowest = risk_or_none(min_risk)
    order = sort if sort in SORTS else "newest"
    page_no = page_number(page)
    flt = StudyFilter(
        patient_pseudonym=text_or_none(patient, max_length=64),
        date_from=first,
        date_to=last,
        modality=wanted_modality.upper() if wanted_modality else None,
        ai_status=status,
        min_risk=lowest,
        sort=order,
    )
    container = get_container(request)
    found = container.search.studies(ctx, flt, offset=offset_of(page_no, PER_PAGE), limit=PER_PAGE)
    filters = {
        "patient": flt.patient_pseudonym or "",
        "date_from": first.isoformat() if first else "",
        "date_to": last.isoformat() if last else "",
        "modality": flt.modality or "",
        "ai": status or "",
        "min_risk": "" if lowest is None else str(lowest),
        "sort": order,
    }
    return render(
        request,
        "worklist.html",
        {
            "title": "Worklist",
            "studies": found.items,
            "pagination": Pagination(page_no, PER_PAGE, found.total),
            "filters": filters,
            "filtered": any(
                filters[k] for k in ("patient", "date_from", "date_to", "modality", "ai", "min_risk")
            ),
            "modalities": MODALITIES,
            "sorts": SORTS,
            "ai_statuses": AI_STATUSES,
            **ai_context(container, ctx, found.items),
        },
    )


def risk_or_none(value: str | None) -> int | None:
    """A whole risk score 0..100 from a form field, or None when empty. Raises ``InvalidRequest``."""
    parsed = number(value, "Minimum risk")
    if parsed is None:
        return None
    if not parsed.is_integer() or not 0 <= parsed <= 100:
        raise InvalidRequest("the minimum risk must be a whole number from 0 to 100")
    return int(parsed)


def ai_context(container: Container, ctx: RequestContext, studies: Sequence[Study]) -> dict[str, object]:
    """``ai``: the AI summary of each listed study, for callers who may read AI results
    (absent otherwise, and the page leaves the AI column and filters out)."""
    if ctx.principal is None or not ctx.principal.can(Permission.READ_RESULTS):
        return {}
    summaries: dict[str, StudyAI] = container.analyze.study_summaries(ctx, [s.id for s in studies])
    return {"ai": summaries, "ai_labels": AI_STATUSES}


def by_year(studies: Sequence[Study]) -> list[tuple[str, list[Study]]]:
    """Studies grouped by year of study date, in the order given; undated ones under "Undated"."""
    groups: dict[str, list[Study]] = {}
    for study in studies:
        groups.setdefault(str(study.study_date.year) if study.study_date else "Undated", []).append(study)
    return list(groups.items())


@router.get("/portal/patients/{pseudonym}", name="portal.patient")
def patient(
    request: Request,
    pseudonym: Annotated[str, Path(max_length=64)],
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    """One patient (by pseudonym) and every study visible to the caller, on a timeline."""
    search = get_container(request).search
    patients = search.patients(ctx, pseudonym=pseudonym, limit=1)
    if not patients.items:
        raise NotFound("no such patient")
    studies = search.studies(ctx, StudyFilter(patient_pseudonym=pseudonym), limit=TIMELINE_LIMIT)
    if not studies.items:
        raise NotFound("no such patient")
    return render(
        request,
        "patient.html",
        {
            "title": f"Patient {pseudonym}",
            "patient": patients.items[0],
            "timeline": by_year(studies.items),
            "shown": len(studies.items),
            "total": studies.total,
            **ai_context(get_container(request), ctx, studies.items),
        },
    )
