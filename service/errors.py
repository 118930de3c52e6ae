"""One error type for everything a request can run into, and the one JSON shape it is sent as.

Routes and the modules under them raise :class:`ServiceError` subclasses carrying an HTTP status,
a machine-readable code and a message naming the problem. ``install`` turns those, FastAPI's own
validation errors and unknown routes into ``{"error": {"code": ..., "message": ...}}`` — or, under
``/v2``, into ``{"error": "..."}`` as the Open Inference Protocol prescribes.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.headers = headers or {}


class UploadTooLarge(ServiceError):
    status = 413
    code = "upload_too_large"


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before it was answered; the message says where it was."""

    status = 504
    code = "deadline_exceeded"


class Overloaded(ServiceError):
    """Refused at once because a bounded queue is full: retry later (503 + Retry-After)."""

    status = 503
    code = "overloaded"


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    if request.url.path.startswith("/v2"):
        body: dict = {"error": message}
    else:
        body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where, *field = err["loc"]
        name = ".".join(str(f) for f in field) or where
        parts.append(f"{where} parameter '{name}': {err['msg']}" if field else f"{where}: {err['msg']}")
    return "; ".join(parts)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
BURST_WINDOW_S = 10.0


class BurstLog:
    """One WARNING for the first of a burst of like server errors, one with their count when it ends.

    Under overload every shed request is a 503; a line each made 22,764 lines in 30 s. Errors are
    alike when status and code are; a burst is the ``window_s`` after its first line.
    """

    def __init__(self, window_s: float = BURST_WINDOW_S):
        self.window_s = window_s
        self._counts: dict[tuple[int, str], int] = {}

    def warning(self, request: Request, exc: ServiceError) -> None:
        key = (exc.status, exc.code)
        if key in self._counts:
            self._counts[key] += 1
            return
        self._counts[key] = 0
        log.warning(
            "%s %s -> %d %s: %s (more like it within %g s are counted, not logged)",
            *(request.method, request.url.path, exc.status, exc.code, exc.message, self.window_s),
        )
        asyncio.get_running_loop().call_later(self.window_s, self._end, key)

    def _end(self, key: tuple[int, str]) -> None:
        if n := self._counts.pop(key, 0):
            log.warning("%d more %d %s in the last %g s", n, *key, self.window_s)


def install(app: FastAPI) -> None:
    bursts = BurstLog()

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status >= 500:
            bursts.warning(request, exc)
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "invalid_parameter", _describe_validation(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "server_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}; see /docs for the API"
        return error_response(request, exc.status_code, code, message, exc.headers)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a client mistake. Starlette re-raises it after this response, so the server
        # logs the traceback; the client gets a well-formed 500 instead of a dropped connection.
        return error_response(request, 500, "server_error", f"internal error ({type(exc).__name__})")
