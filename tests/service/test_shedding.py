"""A full queue refuses ``POST /predict`` with 503 + Retry-After before the request's body is read.

The refused request declares a 1 MB body and sends none of it: the answer can only come before the
body was read. Requests are held in the queue by configuration (a long delay that applies even
when the model is idle), not by sleeping.
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
from samples import digit_png
from servers import ServerThread, metric, settings_for, wait_until


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
