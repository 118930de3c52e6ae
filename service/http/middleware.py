"""Plain ASGI middlewares: a request-body size cap, per-request bookkeeping (id, metrics, outcome), and
the direct call of the hot route."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceError, UploadTooLarge
from service.http.draining import Drain
from service.http.errors import BurstLog, error_response
from service.http.refusals import RefusalCheck
from service.http.request_ids import request_id, request_id_of
from service.metrics.prometheus import Metrics

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's status for a client that went away before its answer: not a server error


class BodySizeLimit:
    """Refuses request bodies over ``max_bytes`` while they stream in, never buffering more.

    The check lives in ``receive``, so it fires inside the route that reads the body and the app's
    error handlers turn it into a 413; routes that never read a body are unaffected.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        declared = _declared_length(dict(scope["headers"]).get(b"content-length"))
        received = 0

        def too_large(size: str) -> UploadTooLarge:
            return UploadTooLarge(f"the request body is {size}; the limit is {limit:,} bytes")

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise too_large(f"{declared:,} bytes" if declared < _UNPARSED else "declared as over 10**18 bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(f"over {received:,} bytes")
            return message

        await self.app(scope, limited_receive, send)


_UNPARSED = 10**18  # stands for any Content-Length of more than 18 digits


def _declared_length(value: bytes | None) -> int | None:
    """Content-Length as a number; one too long to parse counts as over the limit, garbage as absent.

    ``int()`` refuses more than 4,300 digits; the server rejects malformed lengths itself.
    """
    if value is None or not value.strip().isdigit():  # bytes.isdigit() is ASCII-only
        return None
    digits = value.strip().lstrip(b"0") or b"0"
    return int(digits) if len(digits) <= 18 else _UNPARSED


class DirectRoute:
    """Calls one route's endpoint straight from the middleware stack, for its method and path only.

    FastAPI's per-request machinery between the middlewares and an endpoint (exception middleware,
    exit stacks, routing, dependency solving, endpoint wrappers) cost ~100 us of a ~560 us LeNet
    ``/predict`` at saturation, more than the HTTP parsing. The endpoint stays declared as a FastAPI
    route (the OpenAPI schema and every other path are FastAPI's), takes a ``Request`` and returns a
    ``Response``; its :class:`ServiceError` goes to the app's handler for them, as it would there.
    """

    def __init__(
        self,
        app: ASGIApp,
        route: BaseRoute,
        endpoint: Callable[[Request], Awaitable[Response]],
        on_error: Callable[[Request, ServiceError], Awaitable[Response]],
    ):
        self.app = app
        self.route = route
        self.path = route.path  # type: ignore[attr-defined]
        self.methods = route.methods  # type: ignore[attr-defined]
        self.endpoint = endpoint
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] not in self.methods:
            return await self.app(scope, receive, send)
        scope["route"] = self.route  # what RequestMetrics labels the request with
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except ServiceError as exc:
            response = await self.on_error(request, exc)
        await response(scope, receive, send)


class BodyTimeout(ServiceError):
    status = 408
    code = "body_timeout"


class RequestMetrics:
    """The outermost layer of every HTTP request: its id, its metrics, and what it came to.

    - ``X-Request-ID`` (service/http/request_ids.py): sent back in every response and put on the
      request's log lines.
    - Counts and times every request by route template, model and status. The route template
      (``/v2/models/{name}/infer``) keeps the label set bounded whatever paths clients invent; the
      model label is set by routes only once the name is known to be served.
    - A client that disconnects before its answer is counted as 499 and logged at INFO; it is not
      a server error. An unexpected exception is logged with its traceback and answered with 500.
    - The body must arrive within ``body_timeout_s`` of the request's start, else 408.
    - While the worker drains, responses say ``Connection: close`` so clients reconnect elsewhere.
    - A request that ``refusal`` refuses from its line and headers (over the connection limit, a model
      whose queue is full: service/http/refusals.py) gets its 503 here: no routing, no body read, so
      refusing costs a fraction of what serving costs.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, drain: Drain, body_timeout_s: float, refusal: RefusalCheck):
        self.app = app
        self.metrics = metrics
        self.drain = drain
        self.body_timeout_s = body_timeout_s
        self.refusal = refusal
        self.bursts = BurstLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        rid = request_id_of(scope)
        token = request_id.set(rid)
        outcome = _Outcome(receive, send, rid, self.drain, self.body_timeout_s)
        refused_endpoint = None
        try:
            if (refused := self.refusal(scope)) is not None:
                refused_endpoint, exc = refused
                await self._refuse(scope, outcome, exc)
            else:
                await self.app(scope, outcome.receive, outcome.send)
        except Exception as exc:
            await outcome.failed(scope, exc)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or refused_endpoint or "unmatched"
            model = scope.get("state", {}).get("model", "")
            status = CLIENT_CLOSED if outcome.client_left else outcome.status
            if outcome.client_left:
                log.info("%s %s: the client left before its answer (%d)", scope["method"], scope["path"], status)
            self.metrics.observe_request(endpoint, model, status, time.perf_counter() - started)
            request_id.reset(token)

    async def _refuse(self, scope: Scope, outcome: _Outcome, exc: ServiceError) -> None:
        request = Request(scope)
        self.bursts.warning(request, exc)
        response = error_response(request, exc.status, exc.code, exc.message, exc.headers)
        await response(scope, outcome.receive, outcome.send)


class _Outcome:
    """One request's receive/send wrappers and what they saw."""

    def __init__(self, receive: Receive, send: Send, rid: str, drain: Drain, body_timeout_s: float):
        self._receive = receive
        self._send = send
        self._rid = rid.encode()
        self._drain = drain
        self._body_timeout_s = body_timeout_s
        self._body_deadline = asyncio.get_running_loop().time() + body_timeout_s
        self._body_done = False
        self.status = 500  # what the client gets if the app raises before responding
        self.started = False
        self.client_left = False

    async def receive(self) -> Message:
        if self._body_done:  # the app waits for a disconnect (streaming): no deadline
            message = await self._receive()
        else:
            try:
                async with asyncio.timeout_at(self._body_deadline):
                    message = await self._receive()
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {self._body_timeout_s:g} s") from None
            self._body_done = message["type"] != "http.request" or not message.get("more_body", False)
        if message["type"] == "http.disconnect" and not self.started:
            self.client_left = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            headers = [*message.get("headers", []), (b"x-request-id", self._rid)]
            if self._drain.draining:
                headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        await self._send(message)

    async def failed(self, scope: Scope, exc: Exception) -> None:
        if self.client_left:
            return  # whatever broke after the client left (a cut-off upload, say) is not a server error
        if self.started:
            raise exc
        log.error("%s %s failed", scope["method"], scope["path"], exc_info=exc)
        response = error_response(Request(scope), 500, "server_error", f"internal error ({type(exc).__name__})")
        await response(scope, self.receive, self.send)
