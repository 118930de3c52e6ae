"""The batcher's contract (and admission's to it), with plain functions as the model and events (not
sleeps) for timing."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from stand_in import metadata

from service.metrics.prometheus import Metrics
from service.pipeline.admission import QueueFull, admit, room
from service.pipeline.batcher import Batcher, BatchFailed, DeadlineExceeded
from service.pipeline.deadline import Deadline
from service.pipeline.verdicts import Verdicts

NAME = "m"


def doubled(images: np.ndarray) -> Verdicts:
    """Verdicts whose ood_score is twice each image's value: which rows came back is plain to see."""
    double = images.reshape(len(images), -1)[:, 0] * 2
    return Verdicts(images.reshape(len(images), -1), double, double > 100, np.ones_like(double))


def within(seconds: float) -> Deadline:
    return Deadline.after(seconds)


def rows(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1)


class Gate:
    """A model that blocks inside inference until released, and says when it got there."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, images: np.ndarray) -> Verdicts:
        self.entered.set()
        assert self.release.wait(30), "test never released the model"
        return doubled(images)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30)


def make(infer=doubled, **kwargs) -> tuple[Batcher, Metrics]:
    metrics = Metrics()
    options = {"max_batch_size": 4, "max_delay_s": 60.0, "max_queue": 16, **kwargs}
    batcher = Batcher(NAME, infer, metrics.for_model(metadata(NAME)), **options)
    batcher.start()
    return batcher, metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"model": NAME, **labels}) or 0.0


def test_a_full_batch_goes_at_once_and_each_caller_gets_its_rows():
    async def scenario():
        batcher, metrics = make(max_delay_s=60.0)  # the delay would time the test out: fullness must win
        results = await asyncio.gather(*(batcher.submit(rows(v), within(10)) for v in (1, 2, 3, 4)))
        await batcher.close()
        return results, metrics

    results, metrics = asyncio.run(scenario())
    assert [r.ood_score.tolist() for r in results] == [[2.0], [4.0], [6.0], [8.0]]
    assert sample(metrics, "oodserve_batch_size_count") == 1
    assert sample(metrics, "oodserve_batch_size_sum") == 4


def test_a_lone_request_goes_after_max_delay():
    async def scenario():
        batcher, metrics = make(max_delay_s=0.01)
        result = await batcher.submit(rows(5, 6), within(10))
        await batcher.close()
        return result, metrics

    result, metrics = asyncio.run(scenario())
    assert result.ood_score.tolist() == [10.0, 12.0]
    assert sample(metrics, "oodserve_batch_size_sum") == 2


def test_requests_are_never_split_across_batches():
    async def scenario():
        batcher, metrics = make(max_batch_size=4, max_delay_s=0.01)
        results = await asyncio.gather(*(batcher.submit(rows(1, 2, 3), within(10)) for _ in range(3)))
        await batcher.close()
        return results, metrics

    results, metrics = asyncio.run(scenario())
    assert all(r.ood_score.tolist() == [2.0, 4.0, 6.0] for r in results)
    assert sample(metrics, "oodserve_batch_size_count") == 3  # 3 + 3 > 4: one request per batch


async def admitted(batcher: Batcher, value: float) -> Verdicts:
    """One image the way the routes send it: admitted, then submitted with its room."""
    with admit(batcher, 1) as room_held:
        return await batcher.submit(rows(value), within(30), room_held)


def test_a_full_queue_refuses_with_retry_after_and_still_answers_what_it_accepted():
    gate = Gate()

    async def scenario():
        batcher, metrics = make(gate, max_batch_size=1, max_queue=2)
        running = asyncio.create_task(admitted(batcher, 1))
        await gate.wait_entered()  # the first request is inside the model; the queue is empty
        # Tasks start in creation order, so 2 and 3 are queued before 4 asks.
        queued = [asyncio.create_task(admitted(batcher, v)) for v in (2, 3)]
        extra = asyncio.create_task(admitted(batcher, 4))
        await asyncio.wait([extra, *queued], return_when=asyncio.FIRST_EXCEPTION)
        depth = sample(metrics, "oodserve_queue_depth")
        gate.release.set()
        answers = await asyncio.gather(running, *queued)
        await batcher.close()
        return extra.exception(), depth, answers

    refused, depth, answers = asyncio.run(scenario())
    assert isinstance(refused, QueueFull)
    assert refused.status == 503 and refused.headers["Retry-After"] == "1"
    assert depth == 2
    assert [a.ood_score.tolist() for a in answers] == [[2.0], [4.0], [6.0]]


def test_a_request_past_its_deadline_gets_504_and_leaves_the_queue():
    gate = Gate()

    async def scenario():
        batcher, metrics = make(gate, max_batch_size=1)
        running = asyncio.create_task(batcher.submit(rows(1), within(30)))
        await gate.wait_entered()
        with pytest.raises(DeadlineExceeded) as late:
            await batcher.submit(rows(2), within(0.01))
        depth = sample(metrics, "oodserve_queue_depth")
        gate.release.set()
        first = await running
        await batcher.close()
        return late.value, depth, first, metrics

    late, depth, first, metrics = asyncio.run(scenario())
    assert late.status == 504 and "deadline" in late.message
    assert depth == 0
    assert first.ood_score.tolist() == [2.0]
    assert sample(metrics, "oodserve_batch_size_count") == 1  # the late request never ran


def test_a_failing_batch_fails_only_its_own_requests():
    def fragile(images: np.ndarray) -> Verdicts:
        if (images < 0).any():
            raise RuntimeError("negative input")
        return doubled(images)

    async def scenario():
        batcher, _ = make(fragile, max_batch_size=1, max_delay_s=0.0)
        submits = (batcher.submit(rows(v), within(10)) for v in (1, -1, 3))
        outcomes = await asyncio.gather(*submits, return_exceptions=True)
        after = await batcher.submit(rows(4), within(10))
        await batcher.close()
        return outcomes, after

    (ok1, failed, ok3), after = asyncio.run(scenario())
    assert isinstance(failed, BatchFailed) and failed.status == 500 and "negative input" in failed.message
    assert ok1.ood_score.tolist() == [2.0] and ok3.ood_score.tolist() == [6.0]
    assert after.ood_score.tolist() == [8.0]  # the batcher keeps serving


def test_close_answers_everything_still_queued_without_waiting_for_the_delay():
    async def scenario():
        batcher, _ = make(max_delay_s=60.0)
        pending = [asyncio.create_task(batcher.submit(rows(v), within(30))) for v in (1, 2)]
        closing = asyncio.create_task(batcher.close())  # runs after both submits queued (FIFO start)
        answers = await asyncio.gather(*pending)
        await closing
        return answers

    assert [r.ood_score.tolist() for r in asyncio.run(scenario())] == [[2.0], [4.0]]


def test_oversized_requests_are_a_programming_error():
    async def scenario():
        batcher, _ = make(max_batch_size=2)
        try:
            await batcher.submit(rows(1, 2, 3), within(1))
        finally:
            await batcher.close()

    with pytest.raises(ValueError, match=r"1\.\.2 images"):
        asyncio.run(scenario())


# --- dispatch when idle: a lone request never pays the delay; announced requests are waited for ---


def test_a_lone_request_goes_at_once_when_nothing_else_is_on_its_way():
    async def scenario():
        batcher, metrics = make(max_delay_s=60.0)  # waiting for the delay would pass the 30 s deadline (504)
        result = await batcher.submit(rows(7), within(30))
        await batcher.close()
        return result, metrics

    result, metrics = asyncio.run(scenario())
    assert result.ood_score.tolist() == [14.0]
    assert sample(metrics, "oodserve_batch_size_count") == 1 and sample(metrics, "oodserve_batch_size_sum") == 1


async def _queued_while_busy(gate: Gate, batcher: Batcher, announced_images: int):
    """Run r0 through the gated model; queue r1 (with ``announced_images`` on their way) while it runs.

    Returns r1's task and the announcement once r0 is answered: by then the batcher, free again,
    has decided (in the step that answered r0) whether r1 goes alone or waits.
    """
    r0 = asyncio.create_task(batcher.submit(rows(0), within(30)))
    await gate.wait_entered()
    announced = batcher.announce(announced_images)
    r1 = asyncio.create_task(batcher.submit(rows(1), within(30)))  # its first step runs before r0's answer arrives
    gate.release.set()
    await r0
    return r1, announced


def test_a_batch_waits_for_announced_requests_and_takes_them_together():
    gate = Gate()

    async def scenario():
        batcher, metrics = make(gate, max_delay_s=60.0)
        r1, announced = await _queued_while_busy(gate, batcher, 1)
        r2 = await batcher.submit(rows(2), within(30), announced)
        results = [(await r1).ood_score.tolist(), r2.ood_score.tolist()]
        await batcher.close()
        return results, metrics

    results, metrics = asyncio.run(scenario())
    assert results == [[2.0], [4.0]]
    assert sample(metrics, "oodserve_batch_size_count") == 2  # r0, then r1 + r2 (not r1 alone, then r2)
    assert sample(metrics, "oodserve_batch_size_sum") == 3


def test_an_announcement_given_up_releases_the_waiting_batch():
    gate = Gate()

    async def scenario():
        batcher, metrics = make(gate, max_delay_s=60.0)
        r1, announced = await _queued_while_busy(gate, batcher, 1)
        announced.withdraw()  # its image turned out to be corrupt: nothing more is coming
        result = await r1  # without the release it would wait the 60 s delay and miss its 30 s deadline
        await batcher.close()
        return result, metrics

    result, metrics = asyncio.run(scenario())
    assert result.ood_score.tolist() == [2.0]
    assert sample(metrics, "oodserve_batch_size_count") == 2


def test_wait_when_idle_keeps_a_lone_request_for_the_delay():
    async def scenario():
        batcher, _ = make(max_delay_s=60.0, wait_when_idle=True)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(rows(1), within(0.05))  # held for the 60 s delay, so its deadline passes
        await batcher.close()

    asyncio.run(scenario())


def test_announced_images_count_against_the_queue_limit_and_a_closing_batcher_takes_none():
    async def scenario():
        batcher, _ = make(max_queue=4)
        with batcher.announce(3):
            assert room(batcher, 1) is None
            refused = room(batcher, 2)
        assert room(batcher, 4) is None  # the announcement is gone
        await batcher.close()
        return refused, room(batcher, 1)

    refused, closed = asyncio.run(scenario())
    assert isinstance(refused, QueueFull) and refused.status == 503 and refused.headers["Retry-After"] == "1"
    assert "3 images queued or on their way" in refused.message
    assert isinstance(closed, QueueFull) and "shutting down" in closed.message
