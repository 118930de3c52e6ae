"""The drain on SIGTERM: readiness 503 at once, connections still served for a delay, then a clean stop.

A load balancer (a Kubernetes Service, say) stops sending new connections only some seconds after
a pod is told to stop. So on SIGTERM the worker first says "not ready" on ``/readyz`` and answers
with ``Connection: close`` (clients reconnect, to another replica once the balancer caught up),
but keeps accepting for ``drain_delay_s``. Then it stops taking connections without dropping any
the kernel already completed: a drop-all socket filter makes the kernel refuse new handshakes, the
accept queue is emptied by the still-running server, and only then does uvicorn's own graceful
shutdown begin (listener closed, accepted requests answered, lifespan shutdown).

The signal handler wraps uvicorn's: uvicorn installs it before the app's lifespan starts, in every
worker, so the drain works with one worker, several, or ``uvicorn service.app:app`` alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

log = logging.getLogger(__name__)

SO_ATTACH_FILTER = 26  # Linux; not in the socket module
ACCEPT_QUEUE_WAIT_S = 2.0


class Drain:
    """One worker's drain: started by SIGTERM, read by ``/readyz`` and the request middleware."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.started_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def install(self) -> None:
        """Wrap the current SIGTERM handler (uvicorn's); a no-op off the main thread (a test's server)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        then_stop = signal.getsignal(signal.SIGTERM)
        if not callable(then_stop):
            return

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.draining:  # a second SIGTERM (the supervisor forwards one too) changes nothing
                return
            self.started_at = time.monotonic()
            loop.call_soon_threadsafe(self._start, then_stop, sig)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _start(self, then_stop: Callable[[int, FrameType | None], object], sig: int) -> None:
        log.info("SIGTERM: not ready; serving new connections for %.1f s more, then stopping", self.delay_s)
        self._task = asyncio.get_running_loop().create_task(self._finish(then_stop, sig))

    async def _finish(self, then_stop: Callable[[int, FrameType | None], object], sig: int) -> None:
        await asyncio.sleep(self.delay_s)
        with _listeners() as listeners:
            for sock in listeners:
                _refuse_new_connections(sock)
            await _accept_queues_empty(listeners)
        log.info("drain over: listener closing, answering the accepted requests")
        then_stop(sig, None)


@contextlib.contextmanager
def _listeners() -> Iterator[list[socket.socket]]:
    """This process's listening TCP sockets (uvicorn's; shared with the other workers), as duplicates."""
    found = []
    if sys.platform.startswith("linux"):
        for name in os.listdir("/proc/self/fd"):
            try:
                fd = os.dup(int(name))
            except OSError:  # the directory's own descriptor, closed by now
                continue
            try:
                sock = socket.socket(fileno=fd)
            except OSError:  # not a socket
                os.close(fd)
                continue
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN
            ):
                found.append(sock)
            else:
                sock.close()
    try:
        yield found
    finally:
        for sock in found:
            sock.close()


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _refuse_new_connections(sock: socket.socket) -> None:
    """Attach the classic BPF program ``ret #0``: the kernel drops every new SYN (and the last ACK of
    unfinished handshakes), so nothing more joins the accept queue; clients retry the SYN and get
    refused once the listener is closed. Connections already queued are not affected."""
    program = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(1, program)))
    except OSError as e:
        log.warning("could not stop new connections before closing the listener (%s)", e)


def _accept_queue(sock: socket.socket) -> int:
    # For a listening socket Linux reports the accept queue's length as tcpi_unacked (`ss -l`'s Recv-Q).
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 24)[0]


async def _accept_queues_empty(listeners: list[socket.socket]) -> None:
    deadline = time.monotonic() + ACCEPT_QUEUE_WAIT_S
    while any(_accept_queue(s) for s in listeners) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)  # the event loop accepts them meanwhile
