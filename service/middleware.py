"""Two plain ASGI middlewares: a request-body size cap and per-request metrics."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import UploadTooLarge
from service.metrics import Metrics


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
        declared = dict(scope["headers"]).get(b"content-length")
        received = 0

        def too_large(size: str) -> UploadTooLarge:
            return UploadTooLarge(f"the request body is {size}; the limit is {limit:,} bytes")

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise too_large(f"{int(declared):,} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(f"over {received:,} bytes")
            return message

        await self.app(scope, limited_receive, send)


class RequestMetrics:
    """Counts and times every HTTP request by route template, model and status.

    The route template (``/v2/models/{name}/infer``) keeps the label set bounded whatever paths
    clients invent; the model label is set by routes only once the name is known to be served.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before responding

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            model = scope.get("state", {}).get("model", "")
            self.metrics.observe_request(endpoint, model, status, time.perf_counter() - started)
