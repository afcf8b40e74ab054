"""The worklist (studies by patient pseudonym, date range and modality) and the patient timeline."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from irmsia.db.imaging import Study
from irmsia.db.index import StudyFilter
from irmsia.errors import InvalidRequest, NotFound
from irmsia.portal.deps import get_container, page_ctx
from irmsia.portal.error_pages import PortalRoute
from irmsia.portal.forms import date_or_none, date_range, text_or_none
from irmsia.portal.pages import render
from irmsia.portal.paging import Pagination, offset_of, page_number, reversed_window
from irmsia.usecases.context import RequestContext

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PER_PAGE = 25
TIMELINE_LIMIT = 500
MODALITIES = ("CT", "MR", "CR", "DX", "MG", "US", "NM", "PT", "XA", "RF", "OT")
SORTS = {"newest": "Newest first", "oldest": "Oldest first"}
_MODALITY = re.compile(r"^[A-Za-z]{2,16}$")

ShortQuery = Annotated[str | None, Query(max_length=64)]


@router.get("/portal/worklist", name="portal.worklist")
def worklist(
    request: Request,
    patient: ShortQuery = None,
    date_from: ShortQuery = None,
    date_to: ShortQuery = None,
    modality: ShortQuery = None,
    sort: ShortQuery = None,
    page: ShortQuery = None,
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    first, last = date_range(date_or_none(date_from, "From"), date_or_none(date_to, "To"))
    wanted_modality = text_or_none(modality, max_length=16)
    if wanted_modality and not _MODALITY.fullmatch(wanted_modality):
        raise InvalidRequest("modality must be 2-16 letters, e.g. CT")
    order = sort if sort in SORTS else "newest"
    number = page_number(page)
    flt = StudyFilter(
        patient_pseudonym=text_or_none(patient, max_length=64),
        date_from=first,
        date_to=last,
        modality=wanted_modality.upper() if wanted_modality else None,
    )
    search = get_container(request).search
    items: Sequence[Study]
    if order == "newest":
        found = search.studies(ctx, flt, offset=offset_of(number, PER_PAGE), limit=PER_PAGE)
        items, total = found.items, found.total
    else:
        # The use case lists newest first; the oldest page is its last one, read backwards.
        total = search.studies(ctx, flt, offset=0, limit=1).total
        offset, limit = reversed_window(total, number, PER_PAGE)
        items = list(reversed(search.studies(ctx, flt, offset=offset, limit=limit).items)) if limit else []
    filters = {
        "patient": flt.patient_pseudonym or "",
        "date_from": first.isoformat() if first else "",
        "date_to": last.isoformat() if last else "",
        "modality": flt.modality or "",
        "sort": order,
    }
    return render(
        request,
        "worklist.html",
        {
            "title": "Worklist",
            "studies": items,
            "pagination": Pagination(number, PER_PAGE, total),
            "filters": filters,
            "filtered": any(filters[k] for k in ("patient", "date_from", "date_to", "modality")),
            "modalities": MODALITIES,
            "sorts": SORTS,
        },
    )


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
        },
    )
