"""A dynamic batcher with Triton's contract, one per model (and per worker process).

Requests queue up; while a batch runs, the next one fills, so batches grow by themselves under
load. When the model is free, the queued requests go to it at once, unless more are on their way
(announced by the route as soon as their body is in, see :meth:`Batcher.announce`): then the batch
waits for them until it is full (``max_batch_size`` images) or the oldest request has waited
``max_delay``. A lone request therefore never pays the delay, and under load the batches are as
full as the traffic allows. With ``wait_when_idle`` the oldest request always waits up to
``max_delay`` for a full batch (Triton's queue delay; tests use it to hold requests in the queue).

- The queue is bounded (``max_queue`` images, queued and announced together). Whether a request
  fits is service/pipeline/admission.py's decision, which announces the images it lets in; :meth:`submit`
  queues what it is given.
- Every request has a deadline: past it the caller gets :class:`DeadlineExceeded` (504) and its
  images leave the queue, so nobody computes answers nobody waits for.
- A request's images always travel in one batch; a batch that fails fails only the requests in it.
- Inference runs on one dedicated thread per model, never on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.errors import DeadlineExceeded, ServiceError
from service.metrics.prometheus import ModelMetrics
from service.pipeline.deadline import Deadline
from service.pipeline.verdicts import Verdicts

log = logging.getLogger(__name__)


class BatchFailed(ServiceError):
    status = 500
    code = "inference_failed"


@dataclass(eq=False)
class _Pending:
    images: np.ndarray
    future: asyncio.Future[Verdicts]
    enqueued: float  # loop.time()
    deadline: Deadline
    taken: bool = False  # in a batch: its answer comes from the model, it no longer counts as queued


class Announcement:
    """Images a request will submit soon (its body is in, its images are decoding)."""

    def __init__(self, batcher: Batcher, images: int):
        self._batcher = batcher
        self.images = images

    def resize(self, images: int) -> None:
        self._batcher._incoming += images - self.images
        self.images = images

    def withdraw(self) -> None:
        """Submitted, or given up (a bad image, a deadline): the batcher stops waiting for it."""
        if self.images:
            self._batcher._incoming -= self.images
            self.images = 0
            self._batcher._arrived.set()

    def __enter__(self) -> Announcement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.withdraw()


class Batcher:
    def __init__(
        self,
        name: str,
        infer: Callable[[np.ndarray], Verdicts],
        metrics: ModelMetrics,
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        wait_when_idle: bool = False,
    ):
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.wait_when_idle = wait_when_idle
        self._infer = infer
        self._metrics = metrics
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_images = 0
        self._incoming = 0  # images announced and not yet submitted
        self._arrived = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Answer everything still queued or announced (without waiting for fuller batches), then stop."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def waiting(self) -> int:
        """Images queued or announced: what admission weighs against ``max_queue``."""
        return self._queued_images + self._incoming

    def announce(self, images: int = 1) -> Announcement:
        """Tell the batcher ``images`` are on their way, so a batch waits for them (up to ``max_delay``)
        and they count against ``max_queue``. Admission does this for the requests it lets in; use it
        as a context manager around decoding and :meth:`submit`."""
        self._incoming += images
        return Announcement(self, images)

    async def submit(self, images: np.ndarray, deadline: Deadline, announced: Announcement | None = None) -> Verdicts:
        """Queue ``images`` ``[n, ...]`` and return the verdicts for exactly those rows."""
        n = len(images)
        if not 1 <= n <= self.max_batch_size:
            raise ValueError(f"a request must hold 1..{self.max_batch_size} images, got {n}")
        if announced is not None:
            announced.withdraw()
        loop = asyncio.get_running_loop()
        pending = _Pending(images, loop.create_future(), loop.time(), deadline)
        queued_ahead, left_s = self._queued_images, deadline.remaining()
        self._queue.append(pending)
        self._queued_images += n
        self._metrics.queue_depth.set(self._queued_images)
        self._arrived.set()
        try:
            # A timeout (or the caller's cancellation) cancels the future; the batcher skips cancelled ones.
            async with asyncio.timeout(left_s):
                return await pending.future
        except TimeoutError:
            raise DeadlineExceeded(
                f"model '{self.name}' did not answer before the request's deadline ({left_s * 1000:,.0f} ms "
                f"were left when it was queued behind {queued_ahead} images)"
            ) from None
        finally:
            if not pending.taken:  # deadline passed, or the caller was cancelled
                self._withdraw(pending)

    def _withdraw(self, pending: _Pending) -> None:
        pending.future.cancel()
        try:
            self._queue.remove(pending)
        except ValueError:
            return
        self._queued_images -= len(pending.images)
        self._metrics.queue_depth.set(self._queued_images)

    async def _serve(self) -> None:
        while True:
            if not self._queue:
                if self._closing and not self._incoming:  # what admission let in before the close is answered
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_for_fuller_batch()
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    async def _wait_for_fuller_batch(self) -> None:
        """Wait while images are on their way and the batch is not full, up to ``max_delay``."""
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        timer_due = expired = None

        def expire() -> None:
            nonlocal expired
            expired = True  # uvloop's clock has millisecond steps: trust the timer, not `time() >= due`
            self._arrived.set()

        try:
            while self._worth_waiting():
                due = self._queue[0].enqueued + self.max_delay_s
                if expired or loop.time() >= due:
                    return
                if due != timer_due:  # one timer per wait (per oldest request), not one per arrival
                    if timer is not None:
                        timer.cancel()
                    timer, timer_due = loop.call_at(due, expire), due
                self._arrived.clear()
                await self._arrived.wait()
        finally:
            if timer is not None:
                timer.cancel()

    def _worth_waiting(self) -> bool:
        """Queued images that do not fill a batch, and more on their way (or always waiting)."""
        if not self._queue or self._queued_images >= self.max_batch_size or self._closing:
            return False
        return bool(self._incoming) or self.wait_when_idle

    def _take_batch(self) -> list[_Pending]:
        now = asyncio.get_running_loop().time()
        batch: list[_Pending] = []
        size = 0
        while self._queue and size + len(self._queue[0].images) <= self.max_batch_size:
            pending = self._queue.popleft()
            pending.taken = True
            self._queued_images -= len(pending.images)
            if pending.future.done():
                continue
            if pending.deadline.passed():
                where = f"the queue of model '{self.name}'"
                pending.future.set_exception(
                    DeadlineExceeded(f"the request's deadline passed while it waited in {where}")
                )
                continue
            self._metrics.queue_wait.observe(now - pending.enqueued)
            batch.append(pending)
            size += len(pending.images)
        self._metrics.queue_depth.set(self._queued_images)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        images = batch[0].images if len(batch) == 1 else np.concatenate([p.images for p in batch])
        started = time.perf_counter()
        try:
            verdicts = await asyncio.get_running_loop().run_in_executor(self._executor, self._infer, images)
        except Exception as e:
            log.exception("model '%s' failed on a batch of %d images", self.name, len(images))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(BatchFailed(f"model '{self.name}' failed on this batch: {e}"))
            return
        self._metrics.inference_duration.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(images))
        start = 0
        for p in batch:
            stop = start + len(p.images)
            if not p.future.done():
                p.future.set_result(verdicts.rows(start, stop))
            start = stop
