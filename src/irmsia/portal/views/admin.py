"""The admin dashboard: system status and metrics, accounts, pipeline jobs, quarantine review.

Actions post a form (with the CSRF token), call one use case, put a one-shot message in the
session and redirect back (post/redirect/get), so a reload never repeats an action. A
refusal the admin can fix (a taken username, the last admin) is shown as a message; one the
caller cannot fix (wrong role) is the 403 page, raised by the use case.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from irmsia.bootstrap import Container
from irmsia.db.jobs import Job
from irmsia.errors import Conflict, InvalidRequest, IrmsiaError, StorageError
from irmsia.portal.deps import csrf_form, current_session, get_container, page_ctx
from irmsia.portal.error_pages import PortalRoute
from irmsia.portal.forms import text_or_none
from irmsia.portal.pages import render
from irmsia.portal.paging import Pagination, offset_of, page_number
from irmsia.portal.runtime import portal_of
from irmsia.portal.sessions import PortalSession
from irmsia.security.policy import Role
from irmsia.usecases.context import RequestContext

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PER_PAGE = 50
USERS_LIMIT = 500
Id = Annotated[str, Path(max_length=64)]
ShortQuery = Annotated[str | None, Query(max_length=64)]
ShortForm = Annotated[str, Form(max_length=256)]
JOB_STATES = ("pending", "running", "succeeded", "failed")


def _back(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def readiness(container: Container) -> dict[str, str]:
    """The readiness checks, or which one failed (the detail is PHI-free by contract)."""
    try:
        return container.check_ready()
    except StorageError as exc:
        return {"problem": exc.detail}


def ledger_status(container: Container, ctx: RequestContext) -> dict[str, Any] | None:
    """The latest signed checkpoint when this deployment has a ledger; None hides the section."""
    services: Any = getattr(container, "ledger", None)
    reads = getattr(services, "reads", None)
    if reads is None or not hasattr(reads, "latest_checkpoint"):
        return None
    try:
        checkpoint = reads.latest_checkpoint(ctx)
    except IrmsiaError as exc:
        return {"problem": exc.detail}
    return {"size": checkpoint.size, "root": checkpoint.root_hash.hex(), "created_at": checkpoint.created_at}


@router.get("/portal/admin", name="portal.admin")
def dashboard(request: Request, ctx: RequestContext = Depends(page_ctx)) -> Response:
    portal = portal_of(request)
    container = portal.container
    keys = container.key_admin.status(ctx)
    metrics = portal.jobs.metrics(ctx)
    failed = portal.jobs.list(ctx, state="failed", limit=5)
    _, quarantined = container.retrieve.quarantined(ctx, limit=1)
    return render(
        request,
        "admin/dashboard.html",
        {
            "title": "Admin dashboard",
            "keys": keys,
            "metrics": metrics,
            "failed": [job_row(job) for job in failed.items],
            "quarantined": quarantined,
            "ready": readiness(container),
            "ledger": ledger_status(container, ctx),
        },
    )


# --- accounts ------------------------------------------------------------------------------


@router.get("/portal/admin/users", name="portal.users")
def users(request: Request, ctx: RequestContext = Depends(page_ctx)) -> Response:
    rows = get_container(request).accounts.list(ctx, limit=USERS_LIMIT)
    return render(
        request,
        "admin/users.html",
        {
            "title": "Users and roles",
            "users": rows,
            "roles": [role.value for role in Role],
            "limit": USERS_LIMIT,
        },
    )


@router.post("/portal/admin/users", name="portal.user_create", dependencies=[Depends(csrf_form)])
def create_user(
    request: Request,
    username: ShortForm = "",
    role: ShortForm = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    try:
        created = get_container(request).accounts.create(ctx, username, role, password or None)
    except (InvalidRequest, Conflict) as exc:
        session.flash("error", f"Account not created: {exc.detail}")
        return _back("/portal/admin/users")
    message = f"Created the {created.user.role} account {created.user.username}."
    if created.one_time_password:
        message += (
            f" One-time password: {created.one_time_password} — shown once; hand it over securely."
            " It must be changed at first sign-in."
        )
    session.flash("success", message)
    return _back("/portal/admin/users")


@router.post(
    "/portal/admin/users/{user_id}/disable", name="portal.user_disable", dependencies=[Depends(csrf_form)]
)
def disable_user(
    request: Request,
    user_id: Id,
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    return _set_disabled(request, ctx, session, user_id, disabled=True)


@router.post(
    "/portal/admin/users/{user_id}/enable", name="portal.user_enable", dependencies=[Depends(csrf_form)]
)
def enable_user(
    request: Request,
    user_id: Id,
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    return _set_disabled(request, ctx, session, user_id, disabled=False)


def _set_disabled(
    request: Request, ctx: RequestContext, session: PortalSession, user_id: str, *, disabled: bool
) -> Response:
    try:
        user = get_container(request).accounts.set_disabled(ctx, user_id, disabled)
    except Conflict as exc:
        session.flash("error", exc.detail)
        return _back("/portal/admin/users")
    session.flash("success", f"{user.username} is now {'disabled' if disabled else 'enabled'}.")
    return _back("/portal/admin/users")


@router.post("/portal/admin/users/{user_id}/role", name="portal.user_role", dependencies=[Depends(csrf_form)])
def set_role(
    request: Request,
    user_id: Id,
    role: ShortForm = "",
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    try:
        user = get_container(request).accounts.set_role(ctx, user_id, role)
    except (InvalidRequest, Conflict) as exc:
        session.flash("error", exc.detail)
        return _back("/portal/admin/users")
    session.flash("success", f"{user.username} is now {user.role}.")
    return _back("/portal/admin/users")


@router.post(
    "/portal/admin/users/{user_id}/reset-password",
    name="portal.user_reset",
    dependencies=[Depends(csrf_form)],
)
def reset_password(
    request: Request,
    user_id: Id,
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    accounts = get_container(request).accounts
    password = accounts.reset_password(ctx, user_id)
    user = accounts.get(ctx, user_id)
    session.flash(
        "success",
        f"New one-time password for {user.username}: {password} — shown once. "
        "Their sessions were ended; they must change it at next sign-in.",
    )
    return _back("/portal/admin/users")


# --- jobs ----------------------------------------------------------------------------------


def job_row(job: Job) -> dict[str, Any]:
    """A job as the tables show it: ids, state, the PHI-free failure, total step time."""
    try:
        timings = json.loads(job.timings or "{}")
    except json.JSONDecodeError:
        timings = {}
    total = sum(v for v in timings.values() if isinstance(v, int | float)) if isinstance(timings, dict) else 0
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "step": job.step,
        "attempt": job.attempt,
        "batch_id": job.batch_id,
        "error_code": job.error_code,
        "error_detail": job.error_detail,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "duration_ms": round(total, 1) if total else None,
    }


@router.get("/portal/admin/jobs", name="portal.jobs")
def jobs(
    request: Request,
    state: ShortQuery = None,
    page: ShortQuery = None,
    ctx: RequestContext = Depends(page_ctx),
) -> Response:
    number = page_number(page)
    wanted = text_or_none(state, max_length=16)
    found = portal_of(request).jobs.list(
        ctx, state=wanted, offset=offset_of(number, PER_PAGE), limit=PER_PAGE
    )
    return render(
        request,
        "admin/jobs.html",
        {
            "title": "Pipeline jobs",
            "jobs": [job_row(job) for job in found.items],
            "state": wanted or "",
            "states": JOB_STATES,
            "pagination": Pagination(number, PER_PAGE, found.total),
        },
    )


# --- quarantine ----------------------------------------------------------------------------


@router.get("/portal/admin/quarantine", name="portal.quarantine")
def quarantine(
    request: Request, page: ShortQuery = None, ctx: RequestContext = Depends(page_ctx)
) -> Response:
    number = page_number(page)
    rows, total = get_container(request).retrieve.quarantined(
        ctx, offset=offset_of(number, PER_PAGE), limit=PER_PAGE
    )
    return render(
        request,
        "admin/quarantine.html",
        {"title": "Quarantine review", "images": rows, "pagination": Pagination(number, PER_PAGE, total)},
    )


@router.post(
    "/portal/admin/quarantine/{image_id}/release", name="portal.release", dependencies=[Depends(csrf_form)]
)
def release(
    request: Request,
    image_id: Id,
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    try:
        get_container(request).retrieve.release(ctx, image_id)
    except Conflict as exc:
        session.flash("error", exc.detail)
    else:
        session.flash("success", f"Image {image_id} released: it is now visible to readers.")
    return _back("/portal/admin/quarantine")


@router.post(
    "/portal/admin/quarantine/{image_id}/delete",
    name="portal.delete_image",
    dependencies=[Depends(csrf_form)],
)
def delete_image(
    request: Request,
    image_id: Id,
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    get_container(request).retrieve.delete_image(ctx, image_id)
    session.flash("success", f"Image {image_id} deleted (its keys were destroyed).")
    return _back("/portal/admin/quarantine")
