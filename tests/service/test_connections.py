"""Connection limits of ``python -m service`` against raw sockets: idle, slow-header and slow-body
connections are closed, oversized headers refused without memory growth, connections over the limit
get 503 (and each is given back after); a client that leaves mid-upload is a 499 logged at INFO;
every response has a request id.

Every wait is a socket read with a deadline (the server's close or answer is the condition).
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from servers import ServerProcess, metric, wait_until

LIMITS = {
    "OODSERVE_KEEP_ALIVE_TIMEOUT_S": "1",
    "OODSERVE_HEADER_TIMEOUT_S": "2",
    "OODSERVE_BODY_TIMEOUT_S": "2",
    "OODSERVE_MAX_HEADER_BYTES": "16384",
    "OODSERVE_MAX_CONNECTIONS": "20",
}
DEADLINE_S = 15  # for any single wait below: several times the longest limit above


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerProcess]:
    env = {"OODSERVE_MODEL_DIR": str(model_dir), "OODSERVE_THREADS": "1", "OODSERVE_DRAIN_DELAY_S": "0", **LIMITS}
    with ServerProcess(env) as running:
        yield running


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after DEADLINE_S)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def status_and_json(raw: bytes) -> tuple[int, dict[str, bytes], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.strip().lower().decode(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else {}


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def test_an_idle_connection_is_closed(server):
    with connect(server) as sock:
        assert read_until_closed(sock) == b""  # nothing sent: closed after the keep-alive timeout


@pytest.mark.parametrize(
    "start", [b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-slow: ", b"\r\n"], ids=["header", "blank-line"]
)
def test_a_header_that_never_ends_gets_408_and_is_closed(server, start):
    with connect(server) as sock:
        sock.sendall(start)
        status, headers, body = status_and_json(read_until_closed(sock))
    assert status == 408 and body["error"]["code"] == "header_timeout", body
    assert re.fullmatch(rb"[0-9a-f]{32}", headers["x-request-id"])


def test_a_body_that_does_not_arrive_gets_408(server):
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: test\r\ncontent-type: image/png\r\ncontent-length: 1000\r\n\r\n")
        sock.sendall(b"\x89PNG")
        status, _, body = status_and_json(read_until_closed(sock))  # nor is the rest of the body waited for
    assert status == 408 and body["error"]["code"] == "body_timeout", body


def test_bytes_that_are_not_http_get_a_json_400(server):
    with connect(server) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        status, headers, body = status_and_json(read_until_closed(sock))
    assert status == 400 and body["error"]["code"] == "invalid_http" and "x-request-id" in headers


def test_a_1mb_header_is_refused(server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-big: " + b"a" * 2**20 + b"\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer, "closed without an answer"
    status, _, body = status_and_json(answer)
    assert status == 431 and body["error"]["code"] == "header_too_large", body
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_unfinished_8mb_headers_on_100_connections_do_not_grow_memory(server):
    pid = server.process.pid
    before = rss_bytes(pid)
    peak = before
    sending = threading.Event()
    sending.set()

    def watch() -> None:
        nonlocal peak
        while sending.is_set():
            peak = max(peak, rss_bytes(pid))

    def send_unfinished_header(sock: socket.socket) -> None:
        chunk = b"a" * 65536
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-big: ")
            for _ in range(8 * 16):  # 8 MB, never ended by a blank line
                sock.sendall(chunk)
        except OSError:
            pass  # refused (431) and closed by the server

    sockets = [connect(server) for _ in range(100)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(100) as pool:
            list(pool.map(send_unfinished_header, sockets))
    finally:
        sending.clear()
        watcher.join()
        for sock in sockets:
            sock.close()
    growth_mb = (peak - before) / 2**20
    assert growth_mb < 100, f"RSS grew by {growth_mb:.0f} MB"
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_connections_over_the_limit_get_503(server):
    # 20 connections each half-way through a request head: held until the header timeout.
    holders = [connect(server) for _ in range(20)]
    try:
        for sock in holders:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        refused = wait_until(
            lambda: (r := httpx.get(f"{server.url}/healthz")).status_code == 503 and r,
            timeout=1.5,
            what="a request beyond 20 open connections to get 503",
        )
    finally:
        for sock in holders:
            sock.close()
    assert refused.json()["error"]["code"] == "too_many_connections" and refused.headers["retry-after"] == "1"
    assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, "oodserve_requests_total", status="503") >= 1
    wait_until(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, what="the limit to free up")


def test_a_client_that_leaves_mid_upload_is_counted_499_and_logged_at_info(server):
    def count(status: str) -> float:
        return metric(httpx.get(f"{server.url}/metrics").text, "oodserve_requests_total", status=status)

    left, failed = count("499"), count("500")
    with connect(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nhost: test\r\ncontent-type: image/png\r\ncontent-length: 100000\r\n"
            b"x-request-id: upload-that-stops-7\r\n\r\n" + b"\x89PNG" + b"\0" * 1000
        )
    wait_until(lambda: count("499") == left + 1, what="the aborted upload to be counted as 499")
    assert count("500") == failed
    line = server.wait_for_log(r"upload-that-stops-7")
    assert " INFO " in line and "left before its answer" in line, line
    assert not any("Traceback" in x or " ERROR " in x for x in server.log), "".join(server.log)


def test_request_ids_are_taken_or_made_and_always_returned(server):
    with httpx.Client(base_url=server.url) as client:
        given = client.get("/healthz", headers={"x-request-id": "client-id_1.2:3"})
        error = client.get("/no/such/route", headers={"x-request-id": "client-id-4"})
        bad = client.get("/healthz", headers={"x-request-id": "has spaces and <tags>"})
        too_long = client.get("/healthz", headers={"x-request-id": "a" * 200})
        made = [client.get("/healthz").headers["x-request-id"] for _ in range(2)]
    assert given.headers["x-request-id"] == "client-id_1.2:3"
    assert error.status_code == 404 and error.headers["x-request-id"] == "client-id-4"
    for r in (bad, too_long):
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), r.headers
    assert made[0] != made[1] and all(re.fullmatch(r"[0-9a-f]{32}", m) for m in made)


def test_every_connection_the_cases_above_opened_was_given_back(server):
    """Run last (pytest keeps file order): after the timeouts, 431s, 503s and the client that left,
    none of their connections still holds a slot. A request counts its own connection, so beside
    `limit - 2` held ones it is answered, and one more held makes it a 503; a slot an earlier case
    never gave back would make both 503s."""
    limit = int(LIMITS["OODSERVE_MAX_CONNECTIONS"])

    def held() -> socket.socket:
        sock = connect(server)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # half a request head: held until the header timeout
        return sock

    def status() -> int:
        return httpx.get(f"{server.url}/healthz").status_code

    # Polled, not asserted at once: the server learns of a connect() or a close a moment later.
    # Both polls together stay under the 2 s header timeout that ends the held connections.
    holders = [held() for _ in range(limit - 2)]
    try:
        wait_until(lambda: status() == 200, timeout=0.9, what=f"an answer beside {limit - 2} held connections")
        holders.append(held())
        wait_until(lambda: status() == 503, timeout=0.9, what=f"a 503 beside {limit - 1} held connections")
    finally:
        for sock in holders:
            sock.close()
