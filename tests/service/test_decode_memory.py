"""The memory one request can make the service use is bounded, whatever its files say.

A fresh ``python -m service`` process runs with the hostile suite's limits and a small decode
budget; the peak resident memory (``VmHWM``, reset through ``/proc/<pid>/clear_refs`` after warm-up)
is read while it handles the suite's heaviest requests, one at a time and four at once. The bound
stated here is the one docs/service.md derives: the decode budget, one small image per decode
thread, the request bodies, and a fixed allowance for the allocator and Python objects.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import pytest
from hostile_images import large_float_tiff_with_nan, png_rows
from samples import bomb_png, digit_png, encode, photo
from servers import SHARED_LIMITS, ServerProcess, wait_until

from service.pipeline.decodepool import SMALL_SHARE

MiB = 2**20
DECODE_MEMORY_MB = 64
DECODE_THREADS = 2
# Allowance for glibc, Python objects, the multipart parser's copies and the response.
ALLOWANCE = 24 * MiB
BOUND = (
    DECODE_MEMORY_MB * MiB
    + DECODE_THREADS * DECODE_MEMORY_MB * MiB // SMALL_SHARE
    + 3 * SHARED_LIMITS["max_upload_bytes"]
    + ALLOWANCE
)


def heavy_requests() -> dict[str, dict]:
    """The suite's heaviest requests, as keyword arguments of ``httpx.Client.post``."""
    many = [("files", (f"{i}.png", png_rows(2000, 2000), "image/png")) for i in range(SHARED_LIMITS["max_files"])]
    progressive = encode(photo("astronaut").resize((2000, 2000)), "JPEG", quality=95, progressive=True)
    raw = {"headers": {"content-type": "image/png"}}
    return {
        "8-rgba-pngs-of-2000x2000": {"files": many},
        "rgba-png-1x4000000": {"content": png_rows(1, 4_000_000), **raw},
        "float-tiff-1500x1500-with-nan": {"content": large_float_tiff_with_nan(), **raw},
        "progressive-jpeg-2000x2000": {"content": progressive, **raw},
        "png-bomb-30000x30000": {"content": bomb_png(), **raw},
    }


def status_lines(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in lines) if v.strip().endswith("kB")}


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS to its current RSS (Linux: clear_refs 5); return that RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_lines(pid)["VmRSS"]


@pytest.fixture(scope="module")
def server(model_dir: Path):
    env = {
        "OODSERVE_MODEL_DIR": str(model_dir),
        "OODSERVE_THREADS": "1",
        "OODSERVE_LOG_LEVEL": "warning",
        "OODSERVE_DECODE_MEMORY_MB": str(DECODE_MEMORY_MB),
        "OODSERVE_DECODE_THREADS": str(DECODE_THREADS),
        "OODSERVE_DEADLINE_MS": "60000",
        **{f"OODSERVE_{k.upper()}": str(v) for k, v in SHARED_LIMITS.items()},
    }
    with ServerProcess(env) as running, httpx.Client(base_url=running.url, timeout=120) as client:
        # Warm up every path once (decoders, multipart parser, batch sizes) before peaks are measured.
        for kwargs in heavy_requests().values():
            client.post("/predict", **kwargs)
        assert normal(client).status_code == 200
        yield running, client


def normal(client: httpx.Client) -> httpx.Response:
    png, _ = digit_png(0)
    return client.post("/predict", files={"file": ("7.png", png, "image/png")})


@pytest.mark.parametrize("name", list(heavy_requests()))
def test_one_heavy_request_stays_under_the_bound(server, name):
    running, client = server
    idle = reset_peak(running.process.pid)
    response = client.post("/predict", **heavy_requests()[name])
    assert response.status_code < 500, response.text
    peak = status_lines(running.process.pid)["VmHWM"]
    assert peak - idle <= BOUND, f"{name}: peak {peak / MiB:.0f} MiB, {(peak - idle) / MiB:.0f} MiB over idle"


def test_four_heavy_requests_at_once_stay_under_twice_the_bound_and_normal_requests_are_answered(server):
    running, client = server
    idle = reset_peak(running.process.pid)
    heavy = heavy_requests()["8-rgba-pngs-of-2000x2000"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.post, "/predict", **heavy) for _ in range(4)]
        answered_meanwhile = 0
        while not all(f.done() for f in futures):
            response = normal(client)
            assert response.status_code == 200, response.text
            answered_meanwhile += not all(f.done() for f in futures)
        statuses = [f.result().status_code for f in futures]
    peak = status_lines(running.process.pid)["VmHWM"]
    assert statuses == [200] * 4
    assert answered_meanwhile >= 1, "no normal request was answered while the heavy ones were in flight"
    assert peak - idle <= 2 * BOUND, f"peak {peak / MiB:.0f} MiB, {(peak - idle) / MiB:.0f} MiB over idle"
    wait_until(lambda: normal(client).status_code == 200, what="a normal request after the heavy ones")
