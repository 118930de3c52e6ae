"""Logging of failed requests: server errors once per burst with a count, not once per request; an
unexpected exception as one ERROR with its traceback and the request id, answered with a JSON 500."""

from __future__ import annotations

import asyncio
import logging

import httpx
from servers import ServerThread, metric, settings_for
from starlette.requests import Request

from service.errors import ServiceError
from service.http.errors import BurstLog


class _CountLineSeen(logging.Handler):
    """Sets an event when the end-of-burst line (the count) is logged."""

    def __init__(self, event: asyncio.Event):
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if " more " in record.getMessage():
            self.event.set()


def test_a_burst_of_like_errors_is_one_line_then_a_count(caplog):
    request = Request({"type": "http", "method": "POST", "path": "/predict", "headers": [], "query_string": b""})
    shed = ServiceError("the queue is full", code="queue_full", status=503)
    late = ServiceError("no answer in time", code="deadline_exceeded", status=504)
    errors_log = logging.getLogger("service.http.errors")

    async def burst() -> None:
        counted = asyncio.Event()
        watch = _CountLineSeen(counted)
        errors_log.addHandler(watch)
        try:
            log = BurstLog(window_s=0.2)
            for _ in range(500):
                log.warning(request, shed)
            log.warning(request, late)
            await asyncio.wait_for(counted.wait(), timeout=10)  # the window's end
            log.warning(request, shed)  # a new burst starts with a line of its own
        finally:
            errors_log.removeHandler(watch)

    with caplog.at_level(logging.WARNING, logger="service.http.errors"):
        asyncio.run(burst())
    lines = [r.getMessage() for r in caplog.records if r.name == "service.http.errors"]
    first, other, count, again = lines[:4]
    assert "503 queue_full: the queue is full" in first and "504 deadline_exceeded" in other
    assert count == "499 more 503 queue_full in the last 0.2 s"
    assert "503 queue_full" in again


def test_an_unexpected_error_is_a_json_500_with_its_traceback_logged_once(model_dir, caplog):
    server = ServerThread(settings_for(model_dir))

    async def broken() -> None:
        raise RuntimeError("a bug")

    server.app.add_api_route("/broken", broken)
    with server:
        response = httpx.get(f"{server.url}/broken", headers={"x-request-id": "bug-report-1"})
        text = server.metrics()
    assert response.status_code == 500 and response.json()["error"] == {
        "code": "server_error",
        "message": "internal error (RuntimeError)",
    }
    assert response.headers["x-request-id"] == "bug-report-1"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and "GET /broken failed" in errors[0].getMessage()
    assert getattr(errors[0], "request_id", None) == "bug-report-1"
    assert metric(text, "oodserve_requests_total", endpoint="/broken", status="500") == 1
