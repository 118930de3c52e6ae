#!/usr/bin/env python3
"""The checks of `make compose-test` against a running stack (scripts/compose_test.sh starts it).

Sends real MNIST and Fashion-MNIST test images to the service through its published port, then
asks Prometheus's HTTP API whether it scrapes the service (`up == 1`), whether the request
counter rose by what was sent, whether the alerting rules are loaded, and whether every query of
the Grafana dashboard returns data. With --drain it checks
instead that stopping the container answers the requests in flight. Standard library only, so it
runs with any python3, without the project's virtualenv.

    python3 scripts/compose_smoke.py --service http://127.0.0.1:8000 --prometheus http://127.0.0.1:9090
    python3 scripts/compose_smoke.py --service http://127.0.0.1:8000 --drain "docker stop ID"
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "oodserve.json"


class SmokeFailure(Exception):
    pass


# ------------------------------------------------------------------------------------ images --


def read_idx(images_path: Path, labels_path: Path, count: int) -> list[tuple[bytes, int]]:
    """The first `count` 28x28 images (raw 8-bit rows) and labels of an IDX pair (MNIST format)."""
    with images_path.open("rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise SmokeFailure(f"{images_path}: not an IDX image file")
        pixels = [f.read(rows * cols) for _ in range(min(count, n))]
    with labels_path.open("rb") as f:
        magic, n = struct.unpack(">II", f.read(8))
        labels = list(f.read(min(count, n)))
    return [(png_gray(p, cols, rows), label) for p, label in zip(pixels, labels, strict=True)]


def png_gray(pixels: bytes, width: int, height: int) -> bytes:
    """An 8-bit grayscale PNG: what a client would upload."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(b"\x00" + pixels[y * width : (y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# -------------------------------------------------------------------------------------- HTTP --


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def predict(service: str, model: str, field: str, pngs: list[bytes]) -> tuple[dict, float]:
    """POST /predict as multipart (field `file` for one image, `files` for several); the parsed
    response and its round-trip time."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="img{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + png
        + b"\r\n"
        for i, png in enumerate(pngs)
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{service}/predict?{urllib.parse.urlencode({'model': model})}",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response), time.perf_counter() - started
    except urllib.error.HTTPError as e:
        raise SmokeFailure(f"/predict?model={model} answered {e.code}: {e.read().decode()[:300]}") from None


def wait_until(what: str, check, timeout: float, interval: float = 1.0):
    """Poll `check()` until it returns something truthy; its last error explains a timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (urllib.error.URLError, OSError, SmokeFailure, KeyError, ValueError) as e:
            last = str(e)
        time.sleep(interval)
    raise SmokeFailure(f"timed out after {timeout:.0f} s waiting for {what} (last: {last})")


def prom_query(prometheus: str, query: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        answer = get_json(url)
    except urllib.error.HTTPError as e:  # 400/422: Prometheus explains in a JSON body
        raise SmokeFailure(f"Prometheus rejected {query!r}: {e.read().decode()[:300]}") from None
    if answer.get("status") != "success":
        raise SmokeFailure(f"Prometheus query {query!r} failed: {answer}")
    return answer["data"]["result"]


def prom_scalar(prometheus: str, query: str) -> float:
    result = prom_query(prometheus, query)
    return float(result[0]["value"][1]) if result else 0.0


def check_dashboard_queries(prometheus: str) -> None:
    """Every query of the Grafana dashboard, run by the real Prometheus against the traffic just
    sent: it must evaluate, and return data unless it counts errors (none were caused)."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    # Grafana's variables: all models, and a window of a few scrapes (the test is short).
    queries = [q.replace("$__rate_interval", "30s").replace("$model", ".*") for q in queries]
    may_be_empty = ('status=~"5.."', 'status="503"')
    empty = queries
    deadline = time.monotonic() + 45  # rates need two scrapes after the traffic
    while empty and time.monotonic() < deadline:
        empty = [q for q in queries if not prom_query(prometheus, q) and not any(m in q for m in may_be_empty)]
        if empty:
            time.sleep(2)
    if empty:
        raise SmokeFailure("dashboard queries without data:\n  " + "\n  ".join(empty))
    print(f"grafana dashboard: all {len(queries)} queries evaluate on the real Prometheus")


# --------------------------------------------------------------------------------------- main --


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--service", default="http://127.0.0.1:8000")
    p.add_argument("--prometheus", default="http://127.0.0.1:9090")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with MNIST/ and FashionMNIST/")
    p.add_argument("--images", type=int, default=64, help="images of each data set to send")
    p.add_argument("--ready-timeout", type=float, default=120)
    p.add_argument(
        "--drain",
        metavar="STOP_COMMAND",
        help="instead of the checks above: start requests, run STOP_COMMAND (which SIGTERMs the "
        "service) while they are in flight, and require every one of them to be answered 200",
    )
    args = p.parse_args()
    return drain(args) if args.drain else smoke(args)


def drain(args: argparse.Namespace) -> int:
    """SIGTERM must not cost in-flight requests their answers. Run against a service whose
    OODSERVE_MAX_DELAY_MS is long (seconds) and OODSERVE_BATCH_WAIT_WHEN_IDLE true, so that requests
    are certainly still waiting for their batch when the signal arrives."""
    wait_until("/readyz", lambda: get_json(f"{args.service}/readyz").get("ready"), args.ready_timeout)
    model = get_json(f"{args.service}/models")["default_model"]
    (png, _), *_ = read_idx(args.data / "MNIST/raw/t10k-images-idx3-ubyte",
                            args.data / "MNIST/raw/t10k-labels-idx1-ubyte", 1)  # fmt: skip
    with ThreadPoolExecutor(max_workers=8) as pool:
        in_flight = [pool.submit(predict, args.service, model, "file", [png]) for _ in range(8)]
        time.sleep(0.5)  # the requests are accepted and queued, waiting for a fuller batch
        if any(f.done() for f in in_flight):
            raise SmokeFailure(
                "requests were answered before the stop; are OODSERVE_MAX_DELAY_MS long and "
                "OODSERVE_BATCH_WAIT_WHEN_IDLE true?"
            )
        started = time.monotonic()
        stop = subprocess.run(args.drain, shell=True, capture_output=True, text=True)
        if stop.returncode != 0:
            raise SmokeFailure(f"{args.drain!r} failed: {stop.stderr.strip()}")
        answers = [f.result() for f in in_flight]  # raises SmokeFailure on any non-200
    print(f"drain: {len(answers)} requests in flight at SIGTERM, all answered 200; the container "
          f"stopped {time.monotonic() - started:.1f} s after the signal")  # fmt: skip
    return 0


def smoke(args: argparse.Namespace) -> int:
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    wait_until("/readyz", lambda: get_json(f"{args.service}/readyz").get("ready"), args.ready_timeout)
    timings["ready_s"] = time.monotonic() - t0
    models = {m["name"]: m for m in get_json(f"{args.service}/models")["models"]}
    print(f"ready: serving {sorted(models)}")
    check_pages(args.service, next(iter(models)))
    raw = {
        "mnist": read_idx(args.data / "MNIST/raw/t10k-images-idx3-ubyte",
                          args.data / "MNIST/raw/t10k-labels-idx1-ubyte", args.images),
        "fashion": read_idx(args.data / "FashionMNIST/raw/t10k-images-idx3-ubyte",
                            args.data / "FashionMNIST/raw/t10k-labels-idx1-ubyte", args.images),
    }  # fmt: skip
    before = prom_scalar(args.prometheus, 'sum(oodserve_requests_total{endpoint="/predict"})')

    t1 = time.monotonic()
    requests = send_test_images(args.service, models, raw)
    timings["send_s"] = time.monotonic() - t1

    t2 = time.monotonic()
    check_prometheus(args.prometheus, before, requests)
    timings["prometheus_s"] = time.monotonic() - t2

    t3 = time.monotonic()
    check_dashboard_queries(args.prometheus)
    timings["dashboard_s"] = time.monotonic() - t3

    print("smoke timings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return 0


def check_pages(service: str, model: str) -> None:
    """The image ships the pages for people: `/`, a card and their script answer as the service serves them."""
    for path, kind in (("/", "text/html"), (f"/card/{model}", "text/html"), ("/ui/predict.js", "text/javascript")):
        with urllib.request.urlopen(f"{service}{path}", timeout=10) as r:
            if r.status != 200 or not r.headers["Content-Type"].startswith(kind) or not r.read():
                raise SystemExit(f"{path}: {r.status} {r.headers['Content-Type']}: the page is not served")
    print("pages: /, /card/NAME and their scripts served")


def send_test_images(service: str, models: dict[str, dict], raw: dict[str, list[tuple[bytes, int]]]) -> int:
    """Each model gets the data set it was trained on and the other one, which is out-of-distribution
    for it and should be flagged much more often; prints what came back. Returns the requests sent."""
    requests, latencies, report = 0, [], {}
    with ThreadPoolExecutor(max_workers=4) as pool:  # concurrent clients, so batches form
        for model, info in models.items():
            own = "fashion" if "fashion" in info["dataset"].lower() else "mnist"
            other = "mnist" if own == "fashion" else "fashion"
            sent, round_trips, report[model] = send_to_model(pool, service, model, own, other, raw)
            requests += sent
            latencies += round_trips
    latencies.sort()
    print(f"sent {requests} requests: round trip p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")  # fmt: skip
    for model, numbers in report.items():
        print(f"  {model}: " + ", ".join(f"{k} {v:.0%}" for k, v in numbers.items()))
    return requests


def send_to_model(
    pool: ThreadPoolExecutor, service: str, model: str, own: str, other: str, raw: dict[str, list[tuple[bytes, int]]]
) -> tuple[int, list[float], dict[str, float]]:
    """Every image of ``own`` (the model's data set) and of ``other`` in a request each, and 8 of
    ``own`` in one: (requests sent, their round trips, accuracy and OOD rates)."""
    singles = [pool.submit(predict, service, model, "file", [png]) for png, _ in raw[own]]
    foreign = [pool.submit(predict, service, model, "file", [png]) for png, _ in raw[other]]
    several = pool.submit(predict, service, model, "files", [png for png, _ in raw[own][:8]])
    own_answers = [f.result() for f in singles]
    other_answers = [f.result() for f in foreign]
    batch_answer, batch_s = several.result()
    if len(batch_answer["predictions"]) != 8:
        raise SmokeFailure(f"{model}: 8 images in, {len(batch_answer['predictions'])} predictions out")
    first = [a["predictions"][0] for a, _ in own_answers]
    missing = {"label", "is_ood", "ood_score"} - set(first[0])
    if missing:
        raise SmokeFailure(f"{model}: the response lacks {missing}: {first[0]}")
    correct = sum(pr["class_index"] == label for pr, (_, label) in zip(first, raw[own], strict=True))
    rates = {
        "accuracy_on_" + own: correct / len(first),
        "ood_rate_on_" + own: sum(pr["is_ood"] for pr in first) / len(first),
        "ood_rate_on_" + other: sum(a["predictions"][0]["is_ood"] for a, _ in other_answers) / len(other_answers),
    }
    round_trips = [s for _, s in own_answers + other_answers] + [batch_s]
    return len(singles) + len(foreign) + 1, round_trips, rates


def check_prometheus(prometheus: str, before: float, requests: int) -> None:
    """The service's target is up, the request counter rose by what was sent, the alerting rules are loaded."""
    up = wait_until(
        "Prometheus to report the service target up",
        lambda: [r for r in prom_query(prometheus, 'up{job="oodserve", service="service"}')
                 if r["value"][1] == "1"],
        timeout=60,
    )  # fmt: skip
    print(f"prometheus: target {up[0]['metric']['instance']} up == 1")

    def counted() -> float | None:
        value = prom_scalar(prometheus, 'sum(oodserve_requests_total{endpoint="/predict"})')
        return value if value >= before + requests else None

    after = wait_until(f"oodserve_requests_total to rise by {requests}", counted, timeout=60)
    print(f'prometheus: oodserve_requests_total{{endpoint="/predict"}} {before:.0f} -> {after:.0f}')
    images = prom_scalar(prometheus, "sum(oodserve_images_total)")
    if images < requests:
        raise SmokeFailure(f"oodserve_images_total is {images}, fewer than the {requests} requests sent")
    rules = get_json(f"{prometheus}/api/v1/rules?type=alert")["data"]["groups"]
    alerts = sorted(r["name"] for g in rules for r in g["rules"])
    if "OODServeOODRateSurge" not in alerts:
        raise SmokeFailure(f"alerts.yml is not loaded; Prometheus has the alerts {alerts}")
    print(f"prometheus: {len(alerts)} alerting rules loaded")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SmokeFailure as e:
        print(f"compose smoke test FAILED: {e}", file=sys.stderr)
        sys.exit(1)
