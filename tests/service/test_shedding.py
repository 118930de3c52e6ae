"""A full queue refuses ``POST /predict`` with 503 + Retry-After before the request's body is read:
in the request middleware under any ASGI server, and under ``python -m service`` in its HTTP protocol
before the app runs at all.

The refused request declares a 1 MB body and sends none of it: the answer can only come before the
body was read. Requests are held in the queue by configuration (a long delay that applies even
when the model is idle), not by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
from samples import digit_png
from servers import ServerProcess, ServerThread, metric, settings_for, wait_until

from service.http.refusals import EarlyRefusal
from service.metrics.prometheus import Metrics
from service.pipeline.admission import QueueFull


def _post_digit(url: str) -> httpx.Response:
    return httpx.post(f"{url}/predict", content=digit_png(0)[0], headers={"content-type": "image/png"}, timeout=60)


def _read_response(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return lines[0], headers, body


def test_a_full_queue_refuses_before_reading_the_body(model_dir):
    settings = settings_for(model_dir, max_queue=2, max_delay_ms=5000, batch_wait_when_idle=True)
    with ServerThread(settings) as server, ThreadPoolExecutor(2) as background:
        held = [background.submit(_post_digit, server.url) for _ in range(2)]
        wait_until(lambda: metric(server.metrics(), "oodserve_queue_depth") == 2, what="2 queued requests")
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n"
            )
            status, headers, body = _read_response(sock)  # no byte of the body was sent
        answered = [f.result(timeout=60) for f in held]
    assert status.split()[1] == "503", status
    assert headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "queue_full"
    assert [r.status_code for r in answered] == [200, 200]


def test_python_m_service_refuses_from_the_request_line_before_the_app_runs(model_dir):
    env = {
        "OODSERVE_MODEL_DIR": str(model_dir),
        "OODSERVE_THREADS": "1",
        "OODSERVE_DRAIN_DELAY_S": "0",
        "OODSERVE_MAX_QUEUE": "2",
        "OODSERVE_MAX_DELAY_MS": "5000",
        "OODSERVE_BATCH_WAIT_WHEN_IDLE": "true",
    }

    def metrics() -> str:
        return httpx.get(f"{server.url}/metrics", timeout=30).text

    with ServerProcess(env) as server, ThreadPoolExecutor(2) as background:
        held = [background.submit(_post_digit, server.url) for _ in range(2)]
        wait_until(lambda: metric(metrics(), "oodserve_queue_depth") == 2, what="2 queued requests")
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nX-Request-ID: shed-1\r\n"
                b"Content-Length: 1000000\r\n\r\n"
            )
            status, headers, body = _read_response(sock)
        refused = metric(metrics(), "oodserve_requests_total", endpoint="/predict", model="", status="503")
        answered = [f.result(timeout=60) for f in held]
    assert status.split()[1] == "503", status
    assert (headers["retry-after"], headers["x-request-id"]) == ("1", "shed-1")
    assert json.loads(body)["error"]["code"] == "queue_full"
    assert refused == 1  # counted like any other answer
    assert [r.status_code for r in answered] == [200, 200]


def test_the_early_answer_is_the_error_the_app_would_give_and_is_counted():
    metrics = Metrics()
    full = QueueFull("model 'm' has 2 images queued", headers={"Retry-After": "1"})
    early = EarlyRefusal(lambda scope: ("/predict", full) if scope["method"] == "POST" else None, metrics, {"/predict"})
    assert early.app_for("GET", "/predict", b"") is None
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        raise AssertionError("the refusal must not read the body")

    headers = [(b"x-request-id", b"r-1")]
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "headers": headers}
    asyncio.run(early.app_for("POST", "/predict", b"")(scope, receive, send))
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"retry-after"] == b"1" and headers[b"x-request-id"] == b"r-1"
    assert json.loads(body["body"]) == {"error": {"code": "queue_full", "message": "model 'm' has 2 images queued"}}
    exposition = metrics.exposition()[0].decode()
    assert metric(exposition, "oodserve_requests_total", endpoint="/predict", model="", status="503") == 1
