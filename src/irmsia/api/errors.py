"""The one table from exceptions to HTTP responses, and the handlers that apply it.

Every 4xx/5xx body is ``{"error": code, "detail": message, "request_id": id}``. Route
handlers never build error responses; they raise from ``irmsia.errors``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from irmsia import errors
from irmsia.usecases.audit import Outcome

log = logging.getLogger("irmsia.api")

# Most specific class first; the first match wins.
STATUS: list[tuple[type[errors.IrmsiaError], int]] = [
    (errors.PayloadTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.InvalidDicom, 422),
    (errors.InputError, 400),
    (errors.AuthenticationFailed, 401),
    (errors.PermissionDenied, 403),
    (errors.TooManyAttempts, 429),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.DeidentificationError, 422),
    (errors.IntegrityError, 500),
    (errors.CryptoError, 500),
    (errors.BlobNotFound, 500),
    (errors.StorageError, 503),
    (errors.ProofError, 422),
    (errors.LedgerError, 500),
    (errors.ServiceTimeout, 504),
    (errors.ExternalServiceError, 502),
    (errors.ProviderUnavailable, 503),
    (errors.AIError, 502),
    (errors.IrmsiaError, 500),
]

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

_BODY_TYPES = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")


def status_for(exc: errors.IrmsiaError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(request: Request, status: int, code: str, detail: str) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        {"error": code, "detail": detail, "request_id": request_id}, status_code=status, headers=headers
    )


async def _irmsia_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.IrmsiaError)
    status = status_for(exc)
    if status >= 500:
        # The class name and code only: messages are PHI-free by contract, tracebacks stay out of logs.
        log.error("request failed: %s (%s)", exc.code, type(exc).__name__)
    if isinstance(exc, errors.PermissionDenied):
        _audit_denied(request)
    response = error_response(request, status, exc.code, exc.detail)
    if isinstance(exc, errors.TooManyAttempts):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _audit_denied(request: Request) -> None:
    container = getattr(request.app.state, "container", None)
    ctx = getattr(request.state, "ctx", None)
    if container is None or ctx is None:
        return
    route = request.scope.get("route")
    container.audit.record_now(
        ctx,
        "access.denied",
        outcome=Outcome.DENIED,
        detail={"method": request.method, "route": getattr(route, "path", "?")},
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body_errors = [p for p in problems if p.get("loc", ("",))[0] == "body"]
    if body_errors and content_type and content_type not in _BODY_TYPES:
        return error_response(
            request, 415, "unsupported_media_type", f"content type {content_type!r} not accepted"
        )
    if any(p.get("type") == "json_invalid" for p in problems):
        return error_response(request, 400, "invalid_request", "malformed JSON body")
    # Field locations and messages only: never echo the submitted values.
    parts = []
    for problem in problems[:10]:
        location = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
        parts.append(f"{location}: {problem.get('msg', 'invalid')}")
    return error_response(request, 422, "invalid_request", "; ".join(parts))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_"))
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(request, exc.status_code, code, detail)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Process edge: log the type only (a message could carry data), answer a generic 500.
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, _route_path(request))
    return error_response(request, 500, "internal_error", "internal error; quote the request id to an admin")


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "?")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.IrmsiaError, _irmsia_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
