"""Requests refused from their line and headers alone, before routing or reading the body.

A request over the connection limit, or a ``POST /predict`` whose model's queue has no room
(service/pipeline/admission.py decides that), gets its 503 here. Under overload refusing is most of
what the server does, so it has to cost little:

- the request middleware asks :func:`refusal` before the app routes the request;
- ``python -m service``'s HTTP protocol (service/http/connections.py) asks :class:`EarlyRefusal` as
  soon as a request's head is parsed and, for a refusal, answers before the app runs at all.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import NamedTuple

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError
from service.http.errors import BurstLog, error_body
from service.http.request_ids import request_id_of
from service.metrics.prometheus import Metrics
from service.models.registry import ModelRegistry
from service.pipeline.admission import room

# The paths ``refusal`` may refuse; the protocol asks only about these (the connection limit is
# marked by the protocol itself, and counted by the middleware).
EARLY_PATHS = frozenset({"/predict"})
OVER_CONNECTION_LIMIT = "oodserve.over_connection_limit"  # a scope key: the limit this request is over


class RequestRefusal(NamedTuple):
    endpoint: str | None  # what the request metrics count it under (None: no route)
    error: ServiceError


RefusalCheck = Callable[[Scope], "RequestRefusal | None"]


def refusal(registry: ModelRegistry, scope: Scope) -> RequestRefusal | None:
    """What to refuse from the request line alone, before routing or reading the body."""
    if limit := scope.get(OVER_CONNECTION_LIMIT):
        return RequestRefusal(
            None,
            ServiceError(
                f"the server has {limit} connections open already; retry shortly",
                code="too_many_connections",
                status=503,
                headers={"retry-after": "1", "connection": "close"},
            ),
        )
    if scope["path"] not in EARLY_PATHS or scope["method"] != "POST":
        return None
    query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1")) if scope["query_string"] else {}
    try:
        served = registry.get(query.get("model", [None])[0], query.get("version", [None])[0])
    except ServiceError:
        return None  # the route answers 404 (or 503 while loading): no load to shed
    refused = room(served.batcher, 1)  # the image count is in the body: at least one
    return None if refused is None else RequestRefusal("/predict", refused)


class EarlyRefusal:
    """Refusals decided from the request line alone, answered before the app runs at all.

    ``python -m service``'s HTTP protocol asks :meth:`app_for` as soon as a request's head is parsed
    and, for a refusal (a model whose queue is full), runs the small ASGI app it returns instead of
    the service: no middleware stack, no request object, a response body built once per error. The
    answer is the one the request middleware would give (JSON error, Retry-After, X-Request-ID,
    counted in the request metrics); that path still refuses requests under servers without the
    service's protocol.
    """

    def __init__(self, check: RefusalCheck, metrics: Metrics, paths: set[str] | frozenset[str]):
        self.check = check
        self.metrics = metrics
        self.paths = frozenset(p.encode() for p in paths)  # the only paths ``check`` can refuse
        self.bursts = BurstLog()

    def app_for(self, method: str, path: str, query_string: bytes) -> ASGIApp | None:
        refused = self.check({"type": "http", "method": method, "path": path, "query_string": query_string})
        if refused is None:
            return None
        endpoint, exc = refused

        async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
            started = time.perf_counter()
            body = error_body(exc.code, exc.message)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id_of(scope).encode()),
                *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
            ]
            self.bursts.warning(Request(scope), exc)
            await send({"type": "http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            self.metrics.observe_request(endpoint or "unmatched", "", exc.status, time.perf_counter() - started)

        return refuse
