"""Serving throughput and latency of ``POST /predict``, without batching and with dynamic batching.

    .venv/bin/python bench/serve_throughput.py [--client httpx --concurrency 32 --seconds 15 --configs 1:0 32:2 32:5]

For each configuration (``MAX_BATCH_SIZE:MAX_DELAY_MS``) starts the real service, ``python -m
service`` on a free loopback port, configured only through ``OODSERVE_*`` variables, waits for
``GET /readyz``, and lets ``--concurrency`` clients each send one held-out MNIST digit
(``tests/data/mnist-t10k-heldout/*.png``, cycled) per ``POST /predict`` as fast as the answers come
back: a warm-up, then ``--seconds`` measured. Then SIGTERM, and the next configuration. Prints one
markdown table: requests/s (200s only), latency percentiles of the 200s, the mean batch size the
service itself recorded (the ``oodserve_batch_size`` histogram, scraped before and after the
measured window), non-200 answers and transport errors, the throughput ratio against the first
configuration (the baseline; by default ``1:0``, no batching), and the CPU the server and the
client used, in cores.

The client runs on the same machine as the server and takes CPU from it; the CPU columns show how
much. ``--client httpx`` (one httpx.AsyncClient, its pool sized to the concurrency) is the stock
client, but its pool costs CPU per request that grows with the number of connections (encode/httpx
#3215): at 32 connections one event loop saturates a core near 200 requests/s, and the table then
measures the client. ``--client raw`` sends the same requests over plain asyncio streams, one
keep-alive connection per client, at a tenth of the CPU; when the client CPU column nears 1.00,
the client is the bottleneck. All configurations are measured in one run, so their ratios hold on
whatever machine runs it, while the absolute numbers are this machine's. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import itertools
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "tests" / "data" / "mnist-t10k-heldout"
BATCH_METRIC = "oodserve_batch_size"  # service/metrics.py; a histogram with _sum and _count samples


@dataclass(frozen=True)
class Config:
    max_batch_size: int
    max_delay_ms: float

    @classmethod
    def parse(cls, text: str) -> Config:
        try:
            batch, delay = text.split(":")
            return cls(int(batch), float(delay))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected MAX_BATCH_SIZE:MAX_DELAY_MS, e.g. 32:2; got {text!r}") from None

    def __repr__(self) -> str:  # how --help shows the default
        return f"{self.max_batch_size}:{self.max_delay_ms:g}"

    @property
    def label(self) -> str:
        if self.max_batch_size == 1:
            return "no batching (max 1)"
        return f"dynamic batching (max {self.max_batch_size}, {self.max_delay_ms:g} ms)"


@dataclass
class Result:
    config: Config
    seconds: float  # the measured window
    latencies_ms: list[float] = field(default_factory=list)  # of the 200s
    failures: Counter[str] = field(default_factory=Counter)  # status code or exception name -> count
    mean_batch: float | None = None
    server_cpu_s: float | None = None
    client_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(config: Config, port: int, concurrency: int) -> dict[str, str]:
    # Drop inherited OODSERVE_* (and the multiprocess metrics dir): a stray variable in the shell
    # would silently change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OODSERVE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        OODSERVE_MODEL_DIR=str(ROOT / "models"),
        OODSERVE_HOST="127.0.0.1",
        OODSERVE_PORT=str(port),
        OODSERVE_MAX_BATCH_SIZE=str(config.max_batch_size),
        OODSERVE_MAX_DELAY_MS=str(config.max_delay_ms),
        # Every request carries one image, and the settings refuse max_files > max_batch_size.
        OODSERVE_MAX_FILES="1",
        # At most one image per client is ever queued; a 503 here would measure the limit, not the batcher.
        OODSERVE_MAX_QUEUE=str(max(256, 4 * concurrency)),
        OODSERVE_LOG_LEVEL="warning",
    )
    return env


@contextlib.contextmanager
def running_server(config: Config, concurrency: int, ready_timeout: float) -> Iterator[tuple[str, int]]:
    """``python -m service`` for ``config``; yields (base URL, pid) once ``/readyz`` says 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A file, not a pipe: nobody reads the log during the run, and a full pipe would block the server.
    with tempfile.TemporaryFile(mode="w+") as log:
        # sys.executable: the interpreter running the bench (.venv/bin/python), which has the serve extras.
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=ROOT,
            env=server_env(config, port, concurrency),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(url, process, log, ready_timeout)
            yield url, process.pid
        finally:
            stop(process)


def wait_ready(url: str, process: subprocess.Popen, log: IO[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with status {process.returncode} during start-up:\n{tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}/readyz did not answer 200 within {timeout:.0f} s; the service's log:\n{tail(log)}")
        time.sleep(0.1)


def tail(log: IO[str], lines: int = 30) -> str:
    log.flush()
    log.seek(0)
    return "".join(log.readlines()[-lines:]) or "(empty)"


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (the service drains and exits), and kill only if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_totals(metrics_text: str, model: str) -> tuple[float, float]:
    """(images, batches) so far from the batch-size histogram, for ``model``."""
    totals = {"_sum": 0.0, "_count": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            for suffix in totals:
                if sample.name == BATCH_METRIC + suffix and sample.labels.get("model") == model:
                    totals[suffix] += sample.value
    return totals["_sum"], totals["_count"]


# --- the load -----------------------------------------------------------------------------------


def load_images() -> list[bytes]:
    images = [p.read_bytes() for p in sorted(IMAGES.glob("*.png"))]
    if not images:
        raise SystemExit(f"no PNG images in {IMAGES}")
    return images


def served_model(url: str, image: bytes, model: str | None) -> str:
    """The model that answers (the service's default when ``model`` is None); fails loudly if none does."""
    response = httpx.post(
        f"{url}/predict", content=image, headers={"content-type": "image/png"}, params=model_param(model), timeout=30
    )
    if response.status_code != 200:
        raise SystemExit(f"POST /predict answered {response.status_code}: {response.text}")
    return response.json()["model"]


def model_param(model: str | None) -> dict[str, str]:
    return {"model": model} if model else {}


Record = tuple[float, float, str]  # (end, latency in ms, outcome: status code or exception name)


async def httpx_client(
    http: httpx.AsyncClient,
    url: str,
    images: Iterator[bytes],
    params: dict[str, str],
    stop_at: float,
    records: list[Record],
) -> None:
    """Send one image at a time until ``stop_at``."""
    headers = {"content-type": "image/png"}
    while (start := time.perf_counter()) < stop_at:
        try:
            response = await http.post(url, content=next(images), headers=headers, params=params)
            outcome = str(response.status_code)
        except httpx.HTTPError as e:  # counted, not raised: an error is a result of the run
            outcome = type(e).__name__
        end = time.perf_counter()
        records.append((end, (end - start) * 1000, outcome))


def raw_requests(images: list[bytes], model: str | None) -> list[bytes]:
    """Each image as a complete HTTP/1.1 request, built once so that sending costs the client nothing."""
    target = "/predict" + (f"?model={urllib.parse.quote(model)}" if model else "")
    return [
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(image)}\r\n\r\n".encode()
        + image
        for image in images
    ]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server closes the connection) of one response, body read and dropped."""
    status = int((await reader.readuntil(b"\r\n")).split()[1])
    length, close = None, False
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value == "close"
    if length is None:  # uvicorn sends Content-Length for every response this service makes
        raise ValueError("response without Content-Length")
    await reader.readexactly(length)
    return status, close


async def raw_client(port: int, requests: Iterator[bytes], stop_at: float, records: list[Record]) -> None:
    """The same loop as :func:`httpx_client` on one keep-alive connection of plain asyncio streams."""
    writer = None
    while (start := time.perf_counter()) < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(next(requests))
            status, close = await read_response(reader)
            outcome = str(status)
        except (OSError, ValueError, asyncio.IncompleteReadError) as e:
            outcome, close = type(e).__name__, True
        if close and writer is not None:
            writer.close()
            writer = None
        end = time.perf_counter()
        records.append((end, (end - start) * 1000, outcome))
    if writer is not None:
        writer.close()


async def start_clients(
    stack: contextlib.AsyncExitStack,
    url: str,
    images: list[bytes],
    stop_at: float,
    records: list[Record],
    args: argparse.Namespace,
) -> list[asyncio.Task[None]]:
    # Each client starts at a different image, so one batch holds different digits.
    def cycle_from(items: list[bytes], i: int) -> Iterator[bytes]:
        return itertools.islice(itertools.cycle(items), i, None)

    if args.client == "raw":
        requests = raw_requests(images, args.model)
        return [
            asyncio.create_task(raw_client(httpx.URL(url).port, cycle_from(requests, i), stop_at, records))
            for i in range(args.concurrency)
        ]
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    http = await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=60))
    params = model_param(args.model)
    return [
        asyncio.create_task(httpx_client(http, f"{url}/predict", cycle_from(images, i), params, stop_at, records))
        for i in range(args.concurrency)
    ]


async def measure(
    config: Config, url: str, pid: int, model: str, images: list[bytes], args: argparse.Namespace
) -> Result:
    records: list[Record] = []
    async with contextlib.AsyncExitStack() as stack:
        # /metrics goes through its own client: the load's connections are all busy.
        scraper = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        stop_at = time.perf_counter() + args.warmup + args.seconds
        clients = await start_clients(stack, url, images, stop_at, records, args)
        await asyncio.sleep(args.warmup)
        before = batch_totals((await scraper.get(f"{url}/metrics")).text, model)
        t0, cpu0, server_cpu0 = time.perf_counter(), time.process_time(), process_cpu_seconds(pid)
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        t1, cpu1, server_cpu1 = time.perf_counter(), time.process_time(), process_cpu_seconds(pid)
        after = batch_totals((await scraper.get(f"{url}/metrics")).text, model)
        await asyncio.gather(*clients)  # the requests in flight at t1 finish; they end after t1, uncounted
    result = Result(config, t1 - t0, client_cpu_s=cpu1 - cpu0)
    for end, latency, outcome in records:
        if t0 <= end <= t1:
            if outcome == "200":
                result.latencies_ms.append(latency)
            else:
                result.failures[outcome] += 1
    images_done, batches = after[0] - before[0], after[1] - before[1]
    result.mean_batch = images_done / batches if batches else None
    if server_cpu0 is not None and server_cpu1 is not None:
        result.server_cpu_s = server_cpu1 - server_cpu0
    return result


# --- the report ---------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {os.cpu_count()} cores ({usable} usable by this process), {platform.system()} "
        f"{platform.machine()}, Python {platform.python_version()}, onnxruntime "
        f"{importlib.metadata.version('onnxruntime')}, httpx {httpx.__version__}"
    )


def percentiles(latencies_ms: list[float]) -> tuple[str, str, str]:
    if len(latencies_ms) < 2:
        return ("n/a",) * 3
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return tuple(f"{cuts[p - 1]:.1f}" for p in (50, 95, 99))


def errors_cell(failures: Counter[str]) -> str:
    if not failures:
        return "0"
    detail = ", ".join(f"{outcome} x{n}" for outcome, n in failures.most_common())
    return f"{sum(failures.values())} ({detail})"


def table(results: list[Result]) -> str:
    baseline = results[0].rate
    rows = [
        "| configuration | requests/s | p50 ms | p95 ms | p99 ms | mean batch | errors | vs baseline "
        "| server CPU (cores) | client CPU (cores) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        p50, p95, p99 = percentiles(r.latencies_ms)
        mean_batch = "n/a" if r.mean_batch is None else f"{r.mean_batch:.1f}"
        ratio = f"{r.rate / baseline:.2f}x" if baseline else "n/a"
        server_cpu = "n/a" if r.server_cpu_s is None else f"{r.server_cpu_s / r.seconds:.2f}"
        rows.append(
            f"| {r.config.label} | {r.rate:.0f} | {p50} | {p95} | {p99} | {mean_batch} "
            f"| {errors_cell(r.failures)} | {ratio} | {server_cpu} | {r.client_cpu_s / r.seconds:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default=None, help="model to ask for; None: the service's default model")
    p.add_argument(
        "--client",
        choices=["httpx", "raw"],
        default="raw",
        help="load generator: httpx.AsyncClient (one pool of --concurrency connections), or one keep-alive "
        "connection per client on plain asyncio streams, which costs the shared CPU far less",
    )
    p.add_argument("--concurrency", type=int, default=32, help="clients, each with one request in flight")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per configuration")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    p.add_argument(
        "--configs",
        type=Config.parse,
        nargs="+",
        default=[Config(1, 0), Config(32, 2), Config(32, 5)],
        metavar="BATCH:DELAY_MS",
        help="OODSERVE_MAX_BATCH_SIZE:OODSERVE_MAX_DELAY_MS to measure; the first is the baseline of the ratio column",
    )
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for GET /readyz == 200")
    args = p.parse_args()
    if args.concurrency < 1 or args.seconds <= 0 or args.warmup < 0:
        p.error("--concurrency must be >= 1, --seconds > 0 and --warmup >= 0")

    started = time.perf_counter()
    images = load_images()
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"machine: {machine()}")
    print(f"load average at start (1/5/15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    results = []
    for config in args.configs:
        with running_server(config, args.concurrency, args.ready_timeout) as (url, pid):
            model = served_model(url, images[0], args.model)
            result = asyncio.run(measure(config, url, pid, model, images, args))
        results.append(result)
        print(f"  {config.label}: {result.rate:.0f} requests/s", flush=True)
    print(
        f"\nmodel {model}; {args.concurrency} concurrent clients ({args.client}), one PNG per POST /predict "
        f"(raw body); {args.warmup:g} s warm-up + {args.seconds:g} s measured per configuration\n"
    )
    print(table(results))
    print(f"\nwall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
