"""The HTTP/1.1 protocol ``python -m service`` runs: uvicorn's httptools protocol plus the limits it lacks.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``), open connections
(``limit_concurrency``: 503 beyond) and the kernel's queue (``backlog``); ``ServiceConfig`` sets
those from the settings. It has no bound on a request's head, neither in time nor in size:
httptools buffers an unfinished header without limit, and the keep-alive timer is armed only after
a first response, so a connection that sends nothing, or a header a byte at a time, stays forever.
This subclass adds, per connection:

- an idle timeout from the moment the connection is made, not only between requests;
- a deadline for the request line and headers (``header_timeout_s``; 408), counted from their first byte;
- a cap on their size (``max_header_bytes``; 431), checked as bytes arrive, so an unfinished 8 MB
  header costs at most the cap plus one read (256 KiB), not 8 MB;
- a deadline for the rest of a body nobody reads once the response is sent (``body_timeout_s``; a
  body the app reads is timed by the request middleware, which answers 408);
- the connection limit answered by the app (JSON, request id, counted), not by uvicorn;
- a graceful stop that does not close a connection whose request may still be on its way: uvicorn
  closes every connection without a running request at shutdown, including one accepted a moment
  ago whose request has not been read yet; that request would be lost.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import uvicorn
import uvicorn.config
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.http import state
from service.http.errors import error_body
from service.http.refusals import OVER_CONNECTION_LIMIT
from service.settings import Settings

log = logging.getLogger(__name__)

# After refusing a request, read (and drop) what the client still sends before closing: closing with
# unread data makes the kernel send a reset, and a reset makes the client discard our answer.
LINGER_S = 2.0
LINGER_BYTES = 8 * 2**20


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 64 * 1024


class ServiceConfig(uvicorn.Config):
    """uvicorn's Config for the service's settings; it travels (pickled) to every worker process."""

    def __init__(self, app: str, settings: Settings, **kwargs: Any):
        super().__init__(
            app,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=settings.access_log,
            http=LimitedHttpToolsProtocol,
            timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]  # a float works
            limit_concurrency=settings.max_connections,
            backlog=settings.backlog,
            log_config=_log_config(),
            **kwargs,
        )
        self.limits = ConnectionLimits(settings.header_timeout_s, settings.body_timeout_s, settings.max_header_bytes)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the request id on its access lines (``[-]`` outside a request)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"request_id": {"()": "service.http.request_ids.RequestIdLogFilter"}}
    config["handlers"]["access"]["filters"] = ["request_id"]
    config["formatters"]["access"]["fmt"] += " [%(request_id)s]"
    return config


class _HeadTooLarge(Exception):
    pass


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self.limits: ConnectionLimits = getattr(config, "limits", ConnectionLimits())
        self._over_limit, self.limit_concurrency = self.limit_concurrency, None
        self._early_refusal = state.early_refusal(self.app)
        self._head_bytes = 0  # bytes received since the last request's headers were complete
        self._head_size = 0  # the current request's line and headers, as parsed
        self._in_body = False
        self._stopping = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._lingered: int | None = None  # bytes dropped since refusing, None until then
        self._linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._cancel_timers()

    def data_received(self, data: bytes) -> None:
        if self._lingered is not None:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        if not self._in_body:
            self._head_bytes += len(data)
        super().data_received(data)
        limit = self.limits.max_header_bytes
        if not self._in_body and self._head_bytes > limit:  # _refuse does nothing if answered already
            self._refuse(431, "header_too_large", f"the request line and headers exceed {limit:,} bytes")
        elif not self._in_body and self._head_bytes and self._head_timer is None:
            # Armed only for a head that spans reads (or bytes that never begin one, like a trickle of
            # blank lines), so a request whose head comes in one read costs no timer.
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = 0
        if self._head_size > self.limits.max_header_bytes:
            raise _HeadTooLarge  # the parser reports it; uvicorn then calls send_400_response
        self._in_body = True
        # uvicorn's own check would answer a plain-text 503 outside the app (no request id, not counted,
        # a WARNING line each); the request middleware answers it instead.
        if self._over_limit is not None and max(len(self.connections), len(self.tasks)) >= self._over_limit:
            self.scope[OVER_CONNECTION_LIMIT] = self._over_limit  # type: ignore[literal-required]
        elif self._early_refusal is not None and (refuse := self._refusal()) is not None:
            # uvicorn runs `self.app` for the request it is about to start: this once, the refusal instead.
            app, self.app = self.app, refuse
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()
        if self._stopping and self.cycle is not None:
            self.cycle.keep_alive = False

    def _refusal(self) -> ASGIApp | None:
        """The app's early refusal for this request (a full model queue), judged from its line alone."""
        path, _, query = self.url.partition(b"?")
        if path not in self._early_refusal.paths:  # type: ignore[union-attr]
            return None
        method = self.parser.get_method().decode("ascii")
        return self._early_refusal.app_for(method, path.decode("ascii"), query.partition(b"#")[0])  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_body and not self.transport.is_closing():
            # Answered before the body was read (an early 413, a route that ignores it): give the rest
            # of the body as long as a body gets, then drop the connection.
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._unread_body_late)

    def send_400_response(self, msg: str) -> None:
        if self._head_size > self.limits.max_header_bytes:
            limit = self.limits.max_header_bytes
            self._refuse(431, "header_too_large", f"the request line and headers exceed {limit:,} bytes")
        else:
            self._refuse(400, "invalid_http", "the request is not valid HTTP/1.1")

    def shutdown(self) -> None:
        """uvicorn's graceful stop, except for a connection whose request may not have arrived yet."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # the running request is answered, then the connection closes
        elif self.cycle is not None and self._head_bytes == 0 and not self._in_body:
            self.transport.close()  # idle after a response: clients expect that of keep-alive
        else:
            # Accepted, but its request is unread or half-read: answer it (with Connection: close) when it
            # is complete; the idle, header and body deadlines bound the wait.
            self._stopping = True

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined head behind a running request: no room for a 408
        elif not self.transport.is_closing():
            self._refuse(408, "header_timeout", f"the request headers took over {self.limits.header_timeout_s:g} s")

    def _unread_body_late(self) -> None:
        self._body_timer = None
        if not self.transport.is_closing():
            log.info("closing a connection whose unread request body took over %g s", self.limits.body_timeout_s)
            self.transport.close()

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer a request the app never saw (its head is bad, too big or too slow) and close."""
        if self._lingered is not None or self.transport.is_closing():
            return  # answered already
        request_id = uuid.uuid4().hex
        log.info("%s: %d %s: %s [request_id=%s]", self._peer(), status, code, message, request_id)
        body = error_body(code, message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"x-request-id: " + request_id.encode() + b"\r\nconnection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self._cancel_timers()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client's read ends after our answer; it closes, so do we
            self._lingered = 0
            self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger_timer = None
