"""Decoding off the event loop, bounded in threads, in memory, in queue length and in time.

Each image first has its header read on a decode thread (cheap), which gives the most memory its
decode can take (:attr:`service.pipeline.imaging.OpenedImage.cost`). A large image then waits, first come
first served, until that many bytes of the decode budget (``decode_memory_mb``) are free, decodes
and gives the bytes back; an image costing more than the whole budget waits for all of it and
decodes alone. Small images (at most 1/64 of the budget) decode without waiting for the budget, in
the same thread hop that read their header. Tiny images (an MNIST digit, a CIFAR image: at most
``INLINE_BYTES`` of file and ``INLINE_COST`` to decode) are decoded on the event loop itself, in
tens of microseconds: a thread hop costs more than that, and under load a decode thread waits for
the GIL behind the busy event loop (up to the 5 ms switch interval, at each of its steps). So
the decodes in flight hold at most the budget plus one small image per decode thread, however many
requests arrive. Images beyond ``max_decode_queue`` waiting or decoding are refused with 503 +
Retry-After; an image whose request's deadline passes while it waits or decodes is abandoned (504).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from modelfile import InputSpec
from service.errors import DeadlineExceeded, Overloaded
from service.pipeline.deadline import Deadline
from service.pipeline.imaging import DecodeLimits, decode, load_small_image, open_image

T = TypeVar("T")

# An image whose decode costs at most 1/SMALL_SHARE of the budget decodes without waiting for it.
SMALL_SHARE = 64
INLINE_BYTES = 32 * 1024
INLINE_COST = 384 * 1024  # imaging's fixed 256 KiB per decode plus ~128 KiB of pixels (RGB up to ~130x130)
# glibc's mallopt(M_MMAP_THRESHOLD, ...): allocations from this size up get their own mapping, which
# free() hands back to the system at once. By default glibc raises the threshold after the first
# such free, and decoded images (Pillow allocates them in 16 MiB blocks) then live in per-thread
# arenas that keep freed memory for their own thread: the peak would grow with the decode threads.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 20


def _return_large_blocks_to_the_system() -> None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except OSError:  # not glibc: its allocator has its own policy
        pass


class DecodePool:
    def __init__(self, threads: int, memory_bytes: int, max_queue: int):
        _return_large_blocks_to_the_system()
        self.memory_bytes = memory_bytes
        self.small_bytes = memory_bytes // SMALL_SHARE
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        self._in_flight = 0  # images (or other jobs) admitted and not yet finished
        self._reserved = 0  # bytes of the budget held by decodes
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    async def load(self, data: bytes, spec: InputSpec, limits: DecodeLimits, deadline: Deadline) -> np.ndarray:
        """Decode one image to ``spec`` before ``deadline``, within the budget."""
        if len(data) <= INLINE_BYTES:
            opened = open_image(data, spec, limits)
            if opened.cost <= INLINE_COST:
                return decode(opened, spec, deadline)
            opened.image.close()  # a small file promising a large image: the pool decodes it
        self._admit()
        try:
            # Small images (everyday traffic) are decoded in the same hop as their header is read, without
            # the budget, so they never queue behind a huge one; the decode threads bound what they hold.
            opened = await self._on_thread(load_small_image, deadline, data, spec, limits, self.small_bytes, deadline)
            if isinstance(opened, np.ndarray):
                self._in_flight -= 1
                return opened
            cost = min(opened.cost, self.memory_bytes)
            await self._reserve(cost, deadline)
        except BaseException:
            self._in_flight -= 1
            raise
        # From here the image leaves the queue and gives its bytes back when its thread is done,
        # even if the request stopped waiting for it: the count stays true to what is held.
        return await self._on_thread(decode, deadline, opened, spec, deadline, finish=lambda: self._finish(cost))

    async def run(self, fn: Callable[..., T], deadline: Deadline, *args: object) -> T:
        """Run other CPU work of a request (parsing a v2 body) on the pool, under the same queue bound."""
        self._admit()
        return await self._on_thread(fn, deadline, *args, finish=lambda: self._finish(0))

    def _admit(self) -> None:
        if self._in_flight >= self.max_queue:
            raise Overloaded(
                f"{self._in_flight} images are waiting for or in decoding (limit {self.max_queue}); retry shortly",
                code="decode_queue_full",
                headers={"Retry-After": "1"},
            )
        self._in_flight += 1

    def _finish(self, cost: int) -> None:
        self._in_flight -= 1
        if cost:
            self._release(cost)

    async def _on_thread(
        self, fn: Callable[..., T], deadline: Deadline, *args: object, finish: Callable[[], None] | None = None
    ) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        if finish is not None:
            future.add_done_callback(lambda _: finish())
        try:
            return await asyncio.wait_for(asyncio.shield(future), deadline.remaining())
        except TimeoutError:
            # The thread stops by itself soon: imaging's reader refuses to be read past the deadline.
            future.add_done_callback(_discard)
            raise DeadlineExceeded("the request's deadline passed while its images were decoding") from None

    # --- the memory budget ------------------------------------------------------------------

    async def _reserve(self, cost: int, deadline: Deadline) -> None:
        if not self._waiters and self._reserved + cost <= self.memory_bytes:
            self._reserved += cost
            return
        turn = asyncio.get_running_loop().create_future()
        turn.cost = cost  # type: ignore[attr-defined]
        self._waiters.append(turn)
        self._grant()
        try:
            await asyncio.wait_for(asyncio.shield(turn), deadline.remaining())
        except BaseException as e:  # the deadline, or the client went away
            if turn.done():  # granted in the same instant: give it back
                self._release(cost)
            else:
                self._waiters.remove(turn)
                turn.cancel()
                self._grant()
            if not isinstance(e, TimeoutError):
                raise
            raise DeadlineExceeded(
                f"the request's deadline passed while its images waited for decoding memory "
                f"({self._reserved / 2**20:,.0f} of {self.memory_bytes / 2**20:,.0f} MiB in use)"
            ) from None

    def _release(self, cost: int) -> None:
        self._reserved -= cost
        self._grant()

    def _grant(self) -> None:
        """Let waiters in, oldest first, while their cost fits (no small image overtakes a big one)."""
        while self._waiters and self._reserved + self._waiters[0].cost <= self.memory_bytes:  # type: ignore[attr-defined]
            turn = self._waiters.popleft()
            self._reserved += turn.cost  # type: ignore[attr-defined]
            turn.set_result(None)


def _discard(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as never retrieved
