"""Errors on the wire: the one JSON body every error is sent as, its OpenAPI documentation, and the
app's handlers that turn exceptions into it.

A body is ``{"error": {"code": ..., "message": ...}}``, or under ``/v2`` ``{"error": "..."}`` as the
Open Inference Protocol prescribes. The app's handlers, the request middleware, the early refusals and
the connection protocol (which answers requests the app never sees) all build it with :func:`error_body`.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from service.errors import ServiceError

log = logging.getLogger(__name__)

V2_PREFIX = "/v2"


def error_body(code: str, message: str, *, v2: bool = False) -> bytes:
    """The JSON body of an error: the service's shape, or the Open Inference Protocol's."""
    return orjson.dumps({"error": message} if v2 else {"error": {"code": code, "message": message}})


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = error_body(code, message, v2=request.url.path.startswith(V2_PREFIX))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


# --- the documentation ---------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. `not_an_image`, `queue_full`")
    message: str = Field(description="what was wrong, in words")


class ErrorResponse(BaseModel):
    error: ErrorDetail


_V2_ERROR = {"content": {"application/json": {"example": {"error": "what was wrong"}}}}


def error_responses(*statuses: int, v2: bool = False) -> dict[int | str, dict]:
    """A route's ``responses=``: the error body it answers with for each of ``statuses``."""
    return {status: _V2_ERROR if v2 else {"model": ErrorResponse} for status in statuses}


# --- the handlers ----------------------------------------------------------------------------------


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
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        if exc.status >= 500:
            bursts.warning(request, exc)
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 422, "invalid_parameter", _describe_validation(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "server_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}; see /docs for the API"
        return error_response(request, exc.status_code, code, message, exc.headers)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> Response:
        # A bug, not a client mistake. Starlette re-raises it after this response, so the server
        # logs the traceback; the client gets a well-formed 500 instead of a dropped connection.
        return error_response(request, 500, "server_error", f"internal error ({type(exc).__name__})")
