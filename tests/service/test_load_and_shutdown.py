"""Under concurrent load: requests are batched, overload is refused with 503 + Retry-After while
every accepted request is answered, deadlines give 504, and SIGTERM loses no accepted request.

Timing is made deterministic by configuration, not by sleeping: a long ``max_delay_ms`` keeps
requests queued until the batch is full (or the server shuts down), so the tests know exactly
what is waiting where.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
from samples import digit_png, spread_digits
from servers import ServerProcess, ServerThread, metric, settings_for, wait_until


def post_concurrently(url: str, n: int) -> list[httpx.Response]:
    """``n`` /predict requests at once, each with a different digit, on ``n`` connections."""
    pngs = [digit_png(i)[0] for i in spread_digits(n)]
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=n)) as client:

        def post(png: bytes) -> httpx.Response:
            return client.post("/predict", content=png, headers={"content-type": "image/png"})

        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(post, pngs))


def test_concurrent_requests_are_batched(model_dir):
    # A batch of 8 goes the moment it is full; the 10 s delay only matters if batching failed.
    settings = settings_for(model_dir, max_batch_size=8, max_files=8, max_delay_ms=10_000)
    with ServerThread(settings) as server:
        responses = post_concurrently(server.url, 8)
        assert [r.status_code for r in responses] == [200] * 8
        text = server.metrics()
    batches = metric(text, "oodserve_batch_size_count", model="mnist-acet-lenet")
    images = metric(text, "oodserve_batch_size_sum", model="mnist-acet-lenet")
    single = metric(text, "oodserve_batch_size_bucket", model="mnist-acet-lenet", le="1.0")  # batches of 1
    assert images == 8 and single < batches, f"no batch held more than one image:\n{text}"
    assert metric(text, "oodserve_queue_wait_seconds_count", model="mnist-acet-lenet") == 8


def test_overload_gives_503_with_retry_after_and_answers_every_accepted_request(model_dir):
    # At most 4 images may wait and the batch (max 32) never fills, so 4 requests fill the queue
    # and stay there for the 5 s delay: whatever arrives meanwhile finds the queue full.
    settings = settings_for(model_dir, max_queue=4, max_delay_ms=5000)
    with ServerThread(settings) as server, ThreadPoolExecutor(1) as background:
        accepted = background.submit(post_concurrently, server.url, 4)
        wait_until(lambda: metric(server.metrics(), "oodserve_queue_depth") == 4, what="4 queued requests")
        refused = post_concurrently(server.url, 8)
        answered = accepted.result(timeout=60)
        text = server.metrics()
    assert [r.status_code for r in refused] == [503] * 8
    for r in refused:
        assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "queue_full"
    assert [r.status_code for r in answered] == [200] * 4
    assert all(len(r.json()["predictions"]) == 1 for r in answered)
    assert metric(text, "oodserve_requests_total", endpoint="/predict", status="503") == 8
    assert metric(text, "oodserve_requests_total", endpoint="/predict", status="200") == 4


def test_a_request_past_its_deadline_gets_504(model_dir):
    settings = settings_for(model_dir, max_delay_ms=10_000, deadline_ms=200)
    png, _ = digit_png(0)
    with ServerThread(settings) as server:
        response = httpx.post(f"{server.url}/predict", content=png, headers={"content-type": "image/png"})
        depth = metric(server.metrics(), "oodserve_queue_depth", model="mnist-acet-lenet")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded" and "deadline" in response.json()["error"]["message"]
    assert depth == 0  # the late request left the queue


def test_sigterm_under_load_loses_no_accepted_request(model_dir):
    env = {"OODSERVE_MODEL_DIR": str(model_dir), "OODSERVE_MAX_DELAY_MS": "5000", "OODSERVE_THREADS": "1"}
    with ServerProcess(env) as server, ThreadPoolExecutor(1) as background:
        in_flight = background.submit(post_concurrently, server.url, 8)

        def queued() -> float:
            return metric(httpx.get(f"{server.url}/metrics").text, "oodserve_queue_depth")

        wait_until(lambda: queued() == 8, what="8 requests to be accepted and queued")
        server.process.send_signal(signal.SIGTERM)
        # New connections are refused at once, while the accepted requests are still waiting.
        wait_until(lambda: not _connects(server.url), what="the listener to close")
        responses = in_flight.result(timeout=60)
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert [r.status_code for r in responses] == [200] * 8
    assert all(len(r.json()["predictions"]) == 1 for r in responses)
    assert any("shut down" in line for line in server.log), "".join(server.log)


def _connects(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
        return True
    except httpx.TransportError:
        return False
