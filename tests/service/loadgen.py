"""A closed-loop HTTP load generator on raw sockets, for shutdown tests: it tells a refused
connection (never accepted, fine during shutdown) from an accepted one that got no full response
(a lost request).

httpx folds both into one TransportError; a raw socket shows which step failed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

CONNECT_TIMEOUT_S = 5.0
RESPONSE_TIMEOUT_S = 30.0


@dataclass
class Outcomes:
    """What every attempt came to: ``"200"``/``"503"``/... (a full response), ``refused``, ``lost``."""

    counts: Counter = field(default_factory=Counter)
    lost_details: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.counts[outcome] += 1
            if outcome == "lost":
                self.lost_details.append(detail)

    @property
    def answered(self) -> int:
        return sum(n for k, n in self.counts.items() if k.isdigit())


def request_bytes(path: str, body: bytes, content_type: str, keep_alive: bool) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: loadgen\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


def read_response(sock: socket.socket) -> tuple[int, bytes, bool]:
    """Status, headers block and whether the server keeps the connection; raises on a short read."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"EOF after {len(data)} bytes of the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"EOF after {len(rest)} of {length} body bytes")
        rest += chunk
    return status, head, headers.get(b"connection", b"").lower() != b"close"


class Load:
    """``clients`` threads, each sending ``request`` in a loop until ``stop()`` or ``until`` (monotonic)."""

    def __init__(self, port: int, request: bytes, clients: int, *, keep_alive: bool, until: float):
        self.port = port
        self.request = request
        self.keep_alive = keep_alive
        self.until = until
        self.outcomes = Outcomes()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=CONNECT_TIMEOUT_S + RESPONSE_TIMEOUT_S + 5)

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self.until

    def _client(self) -> None:
        sock: socket.socket | None = None
        while self._running():
            if sock is None:
                try:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=CONNECT_TIMEOUT_S)
                except OSError:  # refused, or the SYN was dropped until the timeout: never accepted
                    self.outcomes.add("refused")
                    continue
                sock.settimeout(RESPONSE_TIMEOUT_S)
            try:
                sock.sendall(self.request)
                status, _, keep = read_response(sock)
            except OSError as e:  # the connection was accepted (or reused): the request is lost
                sock.close()
                sock = None
                self.outcomes.add("lost", f"{type(e).__name__}: {e}")
                continue
            self.outcomes.add(str(status))
            if not (self.keep_alive and keep):
                sock.close()
                sock = None
        if sock is not None:
            sock.close()
