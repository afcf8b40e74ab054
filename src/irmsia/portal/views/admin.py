"""The admin dashboard: system status and metrics, accounts, pipeline jobs, quarantine review.

Actions post a form (with the CSRF token), call one use case, put a one-shot message in the
session and redirect back (post/redirect/get), so a reload never repeats an action. A
refusal the admin can fix (a taken username, the last admin) is shown as a message; one the
caller cannot fix (wrong role) is the 403 page, raised by the use case.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from irmsia.bootstrap import Container
from irmsia.db.jobs import Job
from irmsia.errors import Conflict, InvalidRequest, StorageError
from irmsia.portal.deps import csrf_form, current_session, get_container, page_ctx
from irmsia.portal.error_pages import PortalRoute
from irmsia.portal.forms import text_or_none
from irmsia.portal.pages import render
from irmsia.portal.paging import Pagination, offset_of, page_number
from irmsia.portal.sessions import PortalSession
from irmsia.security.policy import Role
from irmsia.usecases.context import RequestContext
from irmsia.usecases.jobs import STATES, parse_timings, retryable

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PER_PAGE = 50
USERS_LIMIT = 500
Id = Annotated[str, Path(max_length=64)]
ShortQuery = Annotated[str | None, Query(max_length=64)]
ShortForm = Annotated[str, Form(max_length=256)]


def _back(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def readiness(container: Container) -> dict[str, str]:
    """The readiness checks, or which one failed (the detail is PHI-free by contract)."""
    try:
        return container.check_ready()
    except StorageError as exc:
        return {"problem": exc.detail}


@router.get("/portal/admin", name="portal.admin")
def dashboard(request: Request, ctx: RequestContext = Depends(page_ctx)) -> Response:
    """System, storage, key, ledger and pipeline status. Nothing it reads is audited and
    nothing is written, so a refresh neither grows the audit log nor the ledger."""
    container = get_container(request)
    keys = container.status.keys(ctx)  # first: admins only, so the page is refused before any query
    metrics = container.jobs.metrics(ctx)
    return render(
        request,
        "admin/dashboard.html",
        {
            "title": "Admin dashboard",
            "keys": keys,
            "metrics": metrics,
            "failed": [job_row(job) for job in metrics.recent_failures],
            "storage": container.status.storage(ctx),
            "ready": readiness(container),
            "ledger": container.ledger.reads.status(ctx),
            "ai": container.analyze.latency(ctx),
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
    total = sum(parse_timings(job.timings).values())
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
        "retryable": retryable(job),
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
    found = get_container(request).jobs.list(
        ctx, state=wanted, offset=offset_of(number, PER_PAGE), limit=PER_PAGE
    )
    return render(
        request,
        "admin/jobs.html",
        {
            "title": "Pipeline jobs",
            "jobs": [job_row(job) for job in found.items],
            "state": wanted or "",
            "states": STATES,
            "pagination": Pagination(number, PER_PAGE, found.total),
            "back": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        },
    )


def _jobs_page(back: str) -> str:
    """Where a job action returns: the jobs page the form was on (state filter and page kept)."""
    return back if back.startswith("/portal/admin/jobs") and "//" not in back else "/portal/admin/jobs"


@router.post("/portal/admin/jobs/{job_id}/retry", name="portal.job_retry", dependencies=[Depends(csrf_form)])
def retry_job(
    request: Request,
    job_id: Id,
    back: Annotated[str, Form(max_length=256)] = "",
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    try:
        job = get_container(request).jobs.retry(ctx, job_id)
    except Conflict as exc:
        session.flash("error", f"Job {job_id} not retried: {exc.detail}")
    else:
        if job.state == "failed":
            session.flash(
                "error", f"Job {job_id} was retried and failed again at {job.step}: {job.error_code}."
            )
        else:
            session.flash("success", f"Job {job_id} was queued again; it is now {job.state}.")
    return _back(_jobs_page(back))


@router.post(
    "/portal/admin/jobs/{job_id}/discard", name="portal.job_discard", dependencies=[Depends(csrf_form)]
)
def discard_job(
    request: Request,
    job_id: Id,
    back: Annotated[str, Form(max_length=256)] = "",
    ctx: RequestContext = Depends(page_ctx),
    session: PortalSession = Depends(current_session),
) -> Response:
    try:
        get_container(request).jobs.discard(ctx, job_id)
    except Conflict as exc:
        session.flash("error", f"Job {job_id}: {exc.detail}")
    else:
        session.flash("success", f"The kept input of job {job_id} was deleted; it cannot be retried.")
    return _back(_jobs_page(back))


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
