"""A dynamic batcher with Triton's contract, one per model (and per worker process).

Requests queue up; a batch goes to the model at once when it is full (``max_batch_size`` images),
otherwise when the oldest request has waited ``max_delay``. While one batch runs, the next one
fills, so batches grow by themselves under load and stay at one image when traffic is light.

- The queue is bounded (``max_queue`` images): a request that does not fit is refused at once
  (:class:`QueueFull`, 503 + Retry-After) rather than waiting behind work the server cannot do.
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

from service.errors import ServiceError
from service.metrics import ModelMetrics

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


class QueueFull(ServiceError):
    status = 503
    code = "queue_full"


class DeadlineExceeded(ServiceError):
    status = 504
    code = "deadline_exceeded"


class BatchFailed(ServiceError):
    status = 500
    code = "inference_failed"


@dataclass(eq=False)
class _Pending:
    images: np.ndarray
    future: asyncio.Future[Outputs]
    enqueued: float  # loop.time()
    deadline: float


class Batcher:
    def __init__(
        self,
        name: str,
        infer: Callable[[np.ndarray], Outputs],
        metrics: ModelMetrics,
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
    ):
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._infer = infer
        self._metrics = metrics
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_images = 0
        self._arrived = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Answer everything still queued (without waiting for fuller batches), then stop."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, images: np.ndarray, timeout_s: float) -> Outputs:
        """Queue ``images`` ``[n, ...]`` and return the model's outputs for exactly those rows."""
        n = len(images)
        if not 1 <= n <= self.max_batch_size:
            raise ValueError(f"a request must hold 1..{self.max_batch_size} images, got {n}")
        if self._closing:
            raise QueueFull("the server is shutting down", headers={"Retry-After": "1"})
        if self._queued_images + n > self.max_queue:
            raise QueueFull(
                f"model '{self.name}' has {self._queued_images} images queued (limit {self.max_queue}); retry shortly",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = _Pending(images, loop.create_future(), now, now + timeout_s)
        self._queue.append(pending)
        self._queued_images += n
        self._metrics.queue_depth.set(self._queued_images)
        self._arrived.set()
        try:
            # shield: a timeout must not cancel the future the batcher may be about to fill.
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(
                f"model '{self.name}' did not answer before the request's deadline; the server is overloaded"
            ) from None
        finally:
            if not pending.future.done():  # deadline passed, or the caller was cancelled
                self._withdraw(pending)

    def _withdraw(self, pending: _Pending) -> None:
        pending.future.cancel()
        try:
            self._queue.remove(pending)
        except ValueError:
            return  # already taken into a running batch; its answer will be dropped
        self._queued_images -= len(pending.images)
        self._metrics.queue_depth.set(self._queued_images)

    async def _serve(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_for_fuller_batch()
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    async def _wait_for_fuller_batch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue and self._queued_images < self.max_batch_size and not self._closing:
            remaining = self._queue[0].enqueued + self.max_delay_s - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Pending]:
        now = asyncio.get_running_loop().time()
        batch: list[_Pending] = []
        size = 0
        while self._queue and size + len(self._queue[0].images) <= self.max_batch_size:
            pending = self._queue.popleft()
            self._queued_images -= len(pending.images)
            if pending.future.done():
                continue
            if now > pending.deadline:
                pending.future.set_exception(DeadlineExceeded(f"deadline passed in model '{self.name}'s queue"))
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
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._infer, images)
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
                p.future.set_result({k: v[start:stop] for k, v in outputs.items()})
            start = stop
