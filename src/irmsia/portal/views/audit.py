"""The auditor's view: the audit log with filters, "who looked at this study", and CSV export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.responses import Response

from irmsia.db.auditlog import AuditFilter
from irmsia.db.models import AuditEvent
from irmsia.errors import InvalidRequest
from irmsia.portal.deps import get_container, page_ctx
from irmsia.portal.error_pages import PortalRoute
from irmsia.portal.forms import date_or_none, date_range, day_bounds, text_or_none
from irmsia.portal.pages import render
from irmsia.portal.paging import Pagination, offset_of, page_number
from irmsia.portal.runtime import portal_of
from irmsia.usecases.audit import AuditLog, AuditPage
from irmsia.usecases.context import RequestContext

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PER_PAGE = 50
EXPORT_PAGE = 500
OUTCOMES = ("success", "failure", "denied")
# Suggestions for the action field (any action can be typed): what the code records.
KNOWN_ACTIONS = (
    "access.denied",
    "ai.analyze",
    "ai.read",
    "audit.search",
    "auth.login",
    "auth.logout",
    "auth.refresh",
    "image.delete",
    "image.download.dicom",
    "image.download.png",
    "image.download.png16",
    "image.download.thumbnail",
    "image.list",
    "image.read",
    "ingest.store",
    "ingest.submit",
    "job.discard",
    "job.list",
    "job.retry",
    "keys.rotate",
    "keys.status",
    "ledger.anchor",
    "ledger.read",
    "ledger.verify",
    "patient.list",
    "quarantine.list",
    "quarantine.release",
    "report.confirmed",
    "report.edited",
    "report.read",
    "report.rejected",
    "series.list",
    "series.read",
    "study.delete",
    "study.list",
    "study.read",
    "user.change_password",
    "user.create",
    "user.disable",
    "user.enable",
    "user.list",
    "user.read",
    "user.reset_password",
    "user.set_role",
    "vault.read",
)
CSV_COLUMNS = (
    "id",
    "time",
    "actor_name",
    "actor_id",
    "actor_role",
    "action",
    "outcome",
    "resource_type",
    "resource_id",
    "client_ip",
    "request_id",
    "detail",
)
ShortQuery = Annotated[str | None, Query(max_length=128)]


@dataclass(frozen=True)
class FilterForm:
    """The audit filter form's fields, as the query string carries them."""

    username: str | None = None
    patient: str | None = None
    actor: str | None = None
    action: str | None = None
    resource: str | None = None
    outcome: str | None = None
    date_from: str | None = None
    date_to: str | None = None


def filter_form(
    username: ShortQuery = None,
    patient: ShortQuery = None,
    actor: ShortQuery = None,
    action: ShortQuery = None,
    resource: ShortQuery = None,
    outcome: ShortQuery = None,
    date_from: ShortQuery = None,
    date_to: ShortQuery = None,
) -> FilterForm:
    """Dependency: the filter fields, shared by the log page and its CSV export."""
    return FilterForm(username, patient, actor, action, resource, outcome, date_from, date_to)


def audit_filter(form: FilterForm) -> tuple[AuditFilter, dict[str, str]]:
    """The use case's filter from the form's fields, and the fields as the form shows them again.

    The username and the patient pseudonym are passed on as typed: the use case resolves
    them (to the account's id, and to the patient's studies, series, images and results).
    """
    wanted_outcome = text_or_none(form.outcome, max_length=16)
    if wanted_outcome and wanted_outcome not in OUTCOMES:
        raise InvalidRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
    first, last = date_range(date_or_none(form.date_from, "From"), date_or_none(form.date_to, "To"))
    since, until = day_bounds(first, last)
    flt = AuditFilter(
        actor_id=text_or_none(form.actor),
        action=text_or_none(form.action, max_length=64),
        resource_id=text_or_none(form.resource),
        outcome=wanted_outcome,
        since=since,
        until=until,
        username=text_or_none(form.username),
        patient=text_or_none(form.patient, max_length=64),
    )
    shown = {
        "username": flt.username or "",
        "patient": flt.patient or "",
        "actor": flt.actor_id or "",
        "action": flt.action or "",
        "resource": flt.resource_id or "",
        "outcome": flt.outcome or "",
        "date_from": first.isoformat() if first else "",
        "date_to": last.isoformat() if last else "",
    }
    return flt, shown


def event_row(event: AuditEvent) -> dict[str, Any]:
    row = event.as_dict()
    row["time"] = event.time
    detail = row.get("detail") or {}
    row["detail_text"] = ", ".join(f"{k}={v}" for k, v in sorted(detail.items())) if detail else ""
    return row


@router.get("/portal/audit", name="portal.audit")
def audit(
    request: Request,
    form: FilterForm = Depends(filter_form),
    page: ShortQuery = None,
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    flt, shown = audit_filter(form)
    number = page_number(page)
    found = get_container(request).audit.search(ctx, flt, offset=offset_of(number, PER_PAGE), limit=PER_PAGE)
    return render(
        request,
        "audit.html",
        {
            "title": "Audit log",
            "events": [event_row(event) for event in found.items],
            "pagination": Pagination(number, PER_PAGE, found.total),
            "filters": shown,
            "filtered": any(shown.values()),
            "outcomes": OUTCOMES,
            "actions": KNOWN_ACTIONS,
        },
    )


def csv_cell(value: Any) -> str:
    """A value for a CSV cell; text a spreadsheet would run as a formula is quoted with a leading '."""
    if value is None:
        return ""
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_lines(audit: AuditLog, ctx: RequestContext, flt: AuditFilter, first: AuditPage) -> Iterator[str]:
    """The header and every matching event as CSV lines, fetched a page at a time.

    ``flt`` must end in the past (see ``export``): pages are read by offset from the newest
    end, and events recorded meanwhile would otherwise shift them.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    page, offset = first, 0
    while page.items:
        for event in page.items:
            row = event.as_dict()
            writer.writerow([csv_cell(row.get(column)) for column in CSV_COLUMNS])
        yield flush()
        if len(page.items) < EXPORT_PAGE:
            return
        offset += EXPORT_PAGE
        page = audit.search(ctx, flt, offset=offset, limit=EXPORT_PAGE)


@router.get("/portal/audit/export.csv", name="portal.audit_export")
def export(
    request: Request,
    form: FilterForm = Depends(filter_form),
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    """The filtered audit log as CSV, streamed page by page.

    The range ends when the export starts (``until`` is exclusive): events recorded while it
    streams, its own page reads included (they are audited), are left for the next export.
    """
    container = get_container(request)
    flt, _ = audit_filter(form)
    now: datetime = container.clock()
    if flt.until is None or flt.until > now:
        flt = replace(flt, until=now)
    # The first page is read before the response starts, so a refusal is a page, not a broken download.
    first = container.audit.search(ctx, flt, offset=0, limit=EXPORT_PAGE)
    filename = f"irmsia-audit-{now.strftime('%Y%m%dT%H%M%SZ')}.csv"
    return StreamingResponse(
        csv_lines(container.audit, ctx, flt, first),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


@router.get("/portal/audit/study-access", name="portal.study_access")
def study_access(
    request: Request,
    study: ShortQuery = None,
    page: ShortQuery = None,
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    """Who looked at one study (by its opaque id): events on the study, its series and its images."""
    study_id = text_or_none(study, max_length=64)
    if study_id is None:
        return RedirectResponse("/portal/audit", status_code=303)
    number = page_number(page)
    found = portal_of(request).study_access.events(
        ctx, study_id, offset=offset_of(number, PER_PAGE), limit=PER_PAGE
    )
    return render(
        request,
        "study_access.html",
        {
            "title": "Who looked at this study",
            "study_id": study_id,
            "events": [event_row(event) for event in found.items],
            "pagination": Pagination(number, PER_PAGE, found.total),
        },
    )
