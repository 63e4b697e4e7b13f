"""One table from domain exceptions to HTTP, rendered in each dialect's own error format."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    ServeAppError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

# Enfugue error titles are pibble's exception class names (enfugue-api.md §1.3).
_ENFUGUE_TITLES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionError",
    404: "NotFoundError",
    405: "UnsupportedMethodError",
    409: "StateConflictError",
    413: "BadRequestError",
    415: "BadRequestError",
    429: "TooManyRequestsError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}

ENFUGUE_MEDIA_TYPE = "application/vnd.api+json"


class HttpError(Exception):
    """A transport-level error raised by a router (not a domain condition)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# Domain error -> HTTP status, the same for both dialects. Order matters: subclasses before their bases
# (UnsupportedMediaType and PayloadTooLarge are InvalidRequests).
_STATUSES: tuple[tuple[type[ServeAppError], int], ...] = (
    (UnsupportedMediaType, 415),
    (PayloadTooLarge, 413),
    (InvalidRequest, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (QueueFull, 429),
    (ServiceUnavailable, 503),
)


def status_for(exc: ServeAppError) -> int:
    """The HTTP status of a domain error; 500 for anything the table does not name."""
    return next((status for kind, status in _STATUSES if isinstance(exc, kind)), 500)


def is_invokeai_path(path: str) -> bool:
    return path.startswith(("/api/v1/", "/api/v2/")) or path in ("/api/v1", "/api/v2")


def error_response(
    request: Request, status: int, detail: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Render an error in the dialect the request's path belongs to."""
    if is_invokeai_path(request.url.path):
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    title = _ENFUGUE_TITLES.get(status) or HTTPStatus(status).phrase.replace(" ", "") + "Error"
    body = {"errors": [{"status": str(status), "title": title, "detail": detail}]}
    return JSONResponse(body, status_code=status, headers=headers, media_type=ENFUGUE_MEDIA_TYPE)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error a route can raise, once for the whole app."""

    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServeAppError)
        status = status_for(exc)
        if status >= 500:
            log.error("request failed: %r", exc)
        headers = {"Retry-After": str(int(exc.retry_after))} if isinstance(exc, QueueFull) else None
        if isinstance(exc, Unauthorized):
            # RFC 6750; InvokeAI 6.12's multi-user mode sends it too.
            headers = {"WWW-Authenticate": "Bearer"}
        return error_response(request, status, exc.message, headers=headers)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HttpError)
        return error_response(request, exc.status, exc.detail)

    async def on_starlette_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(request, exc.status_code, str(exc.detail), headers=headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if is_invokeai_path(request.url.path):
            # InvokeAI answers FastAPI's own 422 shape.
            return JSONResponse({"detail": _jsonable(exc.errors())}, status_code=422)
        return error_response(request, 400, _describe(exc))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never leak internals: log the traceback, answer a generic message.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "Internal server error.")

    app.add_exception_handler(ServeAppError, on_domain_error)
    app.add_exception_handler(HttpError, on_http_error)
    app.add_exception_handler(StarletteHTTPException, on_starlette_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(item) for item in error.get("loc", ()) if item != "body")
        parts.append(f"{location}: {error.get('msg', 'invalid')}" if location else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "Invalid request."


def _jsonable(errors: object) -> object:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(errors)
