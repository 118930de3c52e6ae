"""Under concurrent load: requests are batched, overload is refused with 503 + Retry-After while
every accepted request is answered, deadlines give 504, and SIGTERM loses no accepted request:
readiness turns 503 at once, the listener keeps serving for the drain delay, then closes without
dropping a connection the kernel had accepted.

Timing is made deterministic by configuration, not by sleeping: a long ``max_delay_ms`` with
``batch_wait_when_idle`` keeps requests queued until the batch is full (or the server shuts down),
so the tests know exactly what is waiting where.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from loadgen import Load, request_bytes
from samples import digit_png, spread_digits
from servers import ServerProcess, ServerThread, metric, settings_for, wait_until

DRAIN_DELAY_S = 1.5
LOAD_BOUND_S = 60  # the load stops by then whatever happens


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
    settings = settings_for(model_dir, max_batch_size=8, max_files=8, max_delay_ms=10_000, batch_wait_when_idle=True)
    with ServerThread(settings) as server:
        responses = post_concurrently(server.url, 8)
        assert [r.status_code for r in responses] == [200] * 8
        text = server.metrics()
    batches = metric(text, "oodserve_batch_size_count", model="mnist-acet-lenet")
    images = metric(text, "oodserve_batch_size_sum", model="mnist-acet-lenet")
    single = metric(text, "oodserve_batch_size_bucket", model="mnist-acet-lenet", le="1.0")  # batches of 1
    assert images == 8 and single < batches, f"no batch held more than one image:\n{text}"
    assert metric(text, "oodserve_queue_wait_seconds_count", model="mnist-acet-lenet") == 8


def test_overload_gives_503_with_retry_after_and_answers_every_accepted_request(model_dir, caplog):
    # At most 4 images may wait and the batch (max 32) never fills, so 4 requests fill the queue
    # and stay there for the 5 s delay: whatever arrives meanwhile finds the queue full.
    settings = settings_for(model_dir, max_queue=4, max_delay_ms=5000, batch_wait_when_idle=True)
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
    shed_lines = [r.getMessage() for r in caplog.records if r.name == "service.http.errors"]
    assert len(shed_lines) == 1 and "503 queue_full" in shed_lines[0], shed_lines  # one line per burst


def test_a_request_past_its_deadline_gets_504(model_dir):
    settings = settings_for(model_dir, max_delay_ms=10_000, deadline_ms=200, batch_wait_when_idle=True)
    png, _ = digit_png(0)
    with ServerThread(settings) as server:
        response = httpx.post(f"{server.url}/predict", content=png, headers={"content-type": "image/png"})
        depth = metric(server.metrics(), "oodserve_queue_depth", model="mnist-acet-lenet")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded" and "deadline" in response.json()["error"]["message"]
    assert depth == 0  # the late request left the queue


def test_sigterm_answers_the_queued_requests_before_exiting(model_dir):
    env = {
        "OODSERVE_MODEL_DIR": str(model_dir),
        "OODSERVE_MAX_DELAY_MS": "5000",
        "OODSERVE_BATCH_WAIT_WHEN_IDLE": "true",
        "OODSERVE_THREADS": "1",
        "OODSERVE_DRAIN_DELAY_S": "0",
    }
    with ServerProcess(env) as server, ThreadPoolExecutor(1) as background:
        in_flight = background.submit(post_concurrently, server.url, 8)

        def queued() -> float:
            return metric(httpx.get(f"{server.url}/metrics").text, "oodserve_queue_depth")

        wait_until(lambda: queued() == 8, what="8 requests to be accepted and queued")
        server.process.send_signal(signal.SIGTERM)
        # With no drain delay new connections are refused at once, while the accepted requests wait.
        wait_until(lambda: not _connects(server.url), what="the listener to close")
        responses = in_flight.result(timeout=60)
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert [r.status_code for r in responses] == [200] * 8
    assert all(len(r.json()["predictions"]) == 1 for r in responses)
    assert any("shut down" in line for line in server.log), "".join(server.log)


@pytest.mark.parametrize(
    ("workers", "keep_alive"),
    [(1, False), (1, True), (2, False)],
    ids=["new-connection-per-request", "keep-alive", "2-workers-new-connection-per-request"],
)
def test_sigterm_under_load_loses_no_accepted_request(model_dir, workers, keep_alive):
    env = {
        "OODSERVE_MODEL_DIR": str(model_dir),
        "OODSERVE_THREADS": "1",
        "OODSERVE_WORKERS": str(workers),
        "OODSERVE_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
        "OODSERVE_LOG_LEVEL": "warning",
    }
    request = request_bytes("/predict", digit_png(0)[0], "image/png", keep_alive)
    with ServerProcess(env) as server:
        until = time.monotonic() + LOAD_BOUND_S
        with Load(server.port, request, clients=8, keep_alive=keep_alive, until=until) as load:
            wait_until(lambda: load.outcomes.answered >= 50, what="the load to get going")
            server.process.send_signal(signal.SIGTERM)
            answered_at_signal = load.outcomes.answered
            readiness = _readiness_until_refused(server.url)
            assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
        outcomes = load.outcomes
    assert outcomes.counts["lost"] == 0, f"{outcomes.counts}: {outcomes.lost_details[:5]}"
    assert set(outcomes.counts) <= {"200", "refused"}, outcomes.counts
    assert outcomes.answered > answered_at_signal, "the listener stopped serving at the signal, not after the drain"
    assert readiness and set(readiness) == {503}, f"/readyz after SIGTERM: {readiness}"


def _readiness_until_refused(url: str) -> list[int]:
    """``/readyz`` on a new connection each time, from now until the listener refuses connections."""
    statuses: list[int] = []

    def refused() -> bool:
        try:
            statuses.append(httpx.get(f"{url}/readyz", timeout=10).status_code)
            return False
        except httpx.TransportError:
            return True

    wait_until(refused, timeout=30, what="the listener to close after the drain")
    return statuses


def _connects(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
        return True
    except httpx.TransportError:
        return False
