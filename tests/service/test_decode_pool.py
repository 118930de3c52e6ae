"""The decode pool: a bounded queue that sheds with 503, a memory budget that decodes in flight never
exceed, and the request's deadline, which starts once the body has been read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from hostile_images import png_rows
from samples import digit_png, encode, photo
from servers import ServerThread, settings_for

from modelfile import InputSpec
from service.errors import DeadlineExceeded, Overloaded
from service.pipeline.deadline import Deadline
from service.pipeline.decodepool import INLINE_BYTES, SMALL_SHARE, DecodePool
from service.pipeline.imaging import DecodeLimits, open_image

SPEC = InputSpec(channels=1, height=28, width=28, color_mode="L", resize="stretch")
LIMITS = DecodeLimits(max_pixels=4_000_000, max_side=20_000, max_aspect_ratio=100)


def big_image() -> bytes:
    return png_rows(2000, 2000)  # RGBA, 16 MB decoded


def cost(data: bytes) -> int:
    return open_image(data, SPEC, LIMITS).cost


class WatchedPool(DecodePool):
    """A real pool that remembers the most budget its decodes held at once."""

    peak = 0

    async def _reserve(self, cost: int, deadline: Deadline) -> None:
        await super()._reserve(cost, deadline)
        self.peak = max(self.peak, self._reserved)


def run(pool: DecodePool, *images: bytes, deadline_s: float = 60) -> list[np.ndarray | BaseException]:
    async def scenario():
        deadline = Deadline.after(deadline_s)
        try:
            return await asyncio.gather(*(pool.load(d, SPEC, LIMITS, deadline) for d in images), return_exceptions=True)
        finally:
            pool.shutdown()

    return asyncio.run(scenario())


def test_images_beyond_the_queue_bound_are_refused_at_once_with_503():
    pool = DecodePool(threads=1, memory_bytes=512 << 20, max_queue=2)
    first, second, third = run(pool, big_image(), big_image(), big_image())
    assert first.shape == second.shape == (1, 28, 28)
    assert isinstance(third, Overloaded) and third.status == 503 and third.code == "decode_queue_full"
    assert third.headers == {"Retry-After": "1"} and "limit 2" in third.message


def test_decodes_in_flight_never_hold_more_than_the_budget():
    one = cost(big_image())
    pool = WatchedPool(threads=4, memory_bytes=2 * one + one // 2, max_queue=64)
    results = run(pool, *[big_image()] * 8)
    assert all(isinstance(r, np.ndarray) for r in results), results
    assert pool.peak == 2 * one  # two at a time, never three
    assert pool._reserved == 0 and pool._in_flight == 0


def test_an_image_costing_more_than_the_whole_budget_decodes_alone():
    budget = 16 << 20
    assert cost(big_image()) > budget
    pool = WatchedPool(threads=2, memory_bytes=budget, max_queue=64)
    results = run(pool, big_image(), big_image())
    assert all(isinstance(r, np.ndarray) for r in results), results
    assert pool.peak == budget


def test_small_images_do_not_wait_for_the_budget():
    small, _ = digit_png(0)
    budget = 64 << 20
    assert cost(small) <= budget // SMALL_SHARE
    pool = WatchedPool(threads=2, memory_bytes=budget, max_queue=64)
    [result] = run(pool, small)
    assert result.shape == (1, 28, 28) and pool.peak == 0


def test_a_past_deadline_is_a_504_naming_the_decoding():
    pool = DecodePool(threads=1, memory_bytes=64 << 20, max_queue=8)
    [error] = run(pool, big_image(), deadline_s=-1)
    assert isinstance(error, DeadlineExceeded) and error.status == 504 and "decod" in error.message


# --- through the real server --------------------------------------------------------------------


def test_a_request_with_more_images_than_the_decode_queue_takes_gets_503(model_dir):
    # A photo, not a digit: tiny images are decoded on the event loop and never wait in the queue.
    png = encode(photo("chelsea"))
    assert len(png) > INLINE_BYTES
    files = [("files", (f"{i}.png", png, "image/png")) for i in range(4)]
    with ServerThread(settings_for(model_dir, max_decode_queue=2)) as server:
        response = httpx.post(f"{server.url}/predict", files=files, timeout=30)
        after = httpx.post(f"{server.url}/predict", files=files[:2], timeout=30)
        digits = [("files", (f"{i}.png", digit_png(i)[0], "image/png")) for i in range(4)]
        tiny = httpx.post(f"{server.url}/predict", files=digits, timeout=30)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "decode_queue_full"
    assert after.status_code == 200
    assert tiny.status_code == 200, tiny.text  # decoded inline, so never counted in the queue


def slow_body(data: bytes, pieces: int, pause_s: float) -> Iterator[bytes]:
    """A slow client's upload. The pauses are the client's pace (time must pass while the body is
    on its way); nothing is waited for."""
    step = -(-len(data) // pieces)
    for start in range(0, len(data), step):
        if start:
            time.sleep(pause_s)
        yield data[start : start + step]


@pytest.mark.parametrize("route", ["/predict", "/v2"])
def test_the_deadline_starts_once_the_body_is_in(model_dir, route):
    # The upload takes 3 x 0.4 s, longer than the whole 0.5 s deadline: the answer must still come.
    png, label = digit_png(0)
    with ServerThread(settings_for(model_dir, deadline_ms=500)) as server:
        if route == "/predict":
            response = httpx.post(
                f"{server.url}/predict", content=slow_body(png, 4, 0.4), headers={"content-type": "image/png"}
            )
        else:
            body = b'{"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [%s]}]}' % (
                b", ".join([b"0.5"] * 784)
            )
            response = httpx.post(f"{server.url}/v2/models/mnist-acet-lenet/infer", content=slow_body(body, 4, 0.4))
    assert response.status_code == 200, response.text
    if route == "/predict":
        assert response.json()["predictions"][0]["label"] == str(label)
