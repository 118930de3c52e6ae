"""Metrics: the agreed names and types, promtool-clean, merged across uvicorn workers (and still
true when one is killed and replaced, with no directory left behind by a killed server), and
scraped by a real Prometheus whose query API then returns the request counter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from samples import digit_png, spread_digits
from servers import DEFAULT_MODEL, ServerProcess, free_port, metric, require_tool, wait_until

from service.metrics.workers import pid_alive

EXPECTED = {
    "oodserve_requests": ("counter", {"endpoint", "model", "status"}),
    "oodserve_request_duration_seconds": ("histogram", {"endpoint", "model"}),
    "oodserve_queue_wait_seconds": ("histogram", {"model"}),
    "oodserve_inference_duration_seconds": ("histogram", {"model"}),
    "oodserve_batch_size": ("histogram", {"model"}),
    "oodserve_queue_depth": ("gauge", {"model"}),
    "oodserve_images": ("counter", {"model", "verdict"}),
    "oodserve_ood_score": ("histogram", {"model"}),
    "oodserve_ood_p_value": ("histogram", {"model"}),
    "oodserve_model_info": ("gauge", {"model", "version", "method", "score", "dataset"}),
}


def send_digits(url: str, n: int) -> None:
    for i in spread_digits(n):
        # A new connection each time, so that with several workers the kernel spreads them.
        response = httpx.post(f"{url}/predict", content=digit_png(i)[0], headers={"content-type": "image/png"})
        assert response.status_code == 200, response.text


def promtool_check(text: str) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_names_types_and_labels(server, client):
    send_digits(server.url, 2)
    families = {f.name: f for f in text_string_to_metric_families(server.metrics())}
    for name, (kind, labels) in EXPECTED.items():
        assert name in families, f"{name} missing"
        family = families[name]
        assert family.type == kind, (name, family.type)
        assert family.samples, f"{name} has no samples"
        assert labels <= set(family.samples[0].labels), (name, family.samples[0].labels)
    le = {s.labels["le"] for s in families["oodserve_batch_size"].samples if s.name.endswith("_bucket")}
    assert le == {str(float(2**i)) for i in range(9)} | {"+Inf"}


def test_verdicts_scores_and_v2_requests_are_counted(server, client):
    before = server.metrics()
    tensor = np.full((3, 1, 28, 28), 0.5, dtype=np.float32)  # flat gray: out-of-distribution
    body = {
        "inputs": [{"name": "images", "shape": [3, 1, 28, 28], "datatype": "FP32", "data": tensor.ravel().tolist()}]
    }
    response = client.post(f"/v2/models/{DEFAULT_MODEL}/infer", content=json.dumps(body))
    assert response.status_code == 200
    after = server.metrics()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    endpoint = "/v2/models/{name}/infer"
    assert delta("oodserve_requests_total", endpoint=endpoint, model=DEFAULT_MODEL, status="200") == 1
    assert delta("oodserve_images_total", model=DEFAULT_MODEL, verdict="ood") == 3
    assert delta("oodserve_ood_score_count", model=DEFAULT_MODEL) == 3
    assert delta("oodserve_ood_p_value_count", model=DEFAULT_MODEL) == 3


def test_promtool_accepts_the_exposition(server):
    send_digits(server.url, 1)
    promtool_check(server.metrics())


def test_several_workers_share_one_view(model_dir, tmp_path):
    metrics_dir = tmp_path / "prometheus-multiproc"
    env = {
        "OODSERVE_MODEL_DIR": str(model_dir),
        "OODSERVE_WORKERS": "2",
        "OODSERVE_THREADS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with ServerProcess(env) as server:
        # Both workers must be up (each writes its own files) before the traffic is spread.
        wait_until(lambda: len(_worker_pids(metrics_dir)) >= 2, timeout=60, what="both workers to load models")
        send_digits(server.url, 12)
        text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, "oodserve_requests_total", endpoint="/predict", status="200") == 12
    assert metric(text, "oodserve_images_total", model=DEFAULT_MODEL) == 12
    assert metric(text, "oodserve_batch_size_sum", model=DEFAULT_MODEL) == 12
    assert metric(text, "oodserve_model_info", model=DEFAULT_MODEL) == 1  # livemax, not a sum over workers
    promtool_check(text)


def _worker_pids(directory: Path) -> set[str]:
    return {p.stem.rsplit("_", 1)[-1] for p in directory.glob("gauge_livemax_*.db")}


def _queue_depth_in_file(directory: Path, pid: str) -> float:
    path = directory / f"gauge_livesum_{pid}.db"
    if not path.exists():
        return 0.0
    return sum(v for key, v, *_ in MmapedDict.read_all_values_from_file(str(path)) if "oodserve_queue_depth" in key)


def _post_digit(url: str, i: int) -> int | str:
    try:  # a new connection each, so the kernel spreads them over the workers
        return httpx.post(f"{url}/predict", content=digit_png(i)[0], headers={"content-type": "image/png"}).status_code
    except httpx.TransportError as e:  # the requests the killed worker held
        return type(e).__name__


def test_a_killed_worker_leaves_no_stale_gauge(model_dir, tmp_path):
    metrics_dir = tmp_path / "prometheus-multiproc"
    env = {
        "OODSERVE_MODEL_DIR": str(model_dir),
        "OODSERVE_WORKERS": "2",
        "OODSERVE_THREADS": "1",
        "OODSERVE_MAX_DELAY_MS": "3000",  # the requests wait in the queues, so the gauges are up
        "OODSERVE_BATCH_WAIT_WHEN_IDLE": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with ServerProcess(env) as server, ThreadPoolExecutor(8) as clients:
        first = wait_until(lambda: len(_worker_pids(metrics_dir)) >= 2 and _worker_pids(metrics_dir), timeout=60)
        answers = [clients.submit(_post_digit, server.url, i) for i in spread_digits(8)]
        scrape = lambda: httpx.get(f"{server.url}/metrics").text
        wait_until(lambda: metric(scrape(), "oodserve_queue_depth") == 8, what="8 queued requests")
        victim = max(first, key=lambda pid: _queue_depth_in_file(metrics_dir, pid))
        lost = _queue_depth_in_file(metrics_dir, victim)  # the kernel may have handed it all 8, or fewer
        assert lost > 0
        os.kill(int(victim), signal.SIGKILL)
        wait_until(lambda: len(_worker_pids(metrics_dir) - first) == 1, timeout=60, what="a replacement worker")
        results = [a.result(timeout=60) for a in answers]
        text = scrape()
    assert results.count(200) == 8 - lost, results  # the killed worker's requests failed, the others did not
    assert metric(text, "oodserve_queue_depth") == 0, "the killed worker's queue depth is still counted"
    assert metric(text, "oodserve_model_info", model=DEFAULT_MODEL) == 1
    assert metric(text, "oodserve_requests_total", endpoint="/predict", status="200") == results.count(200)


def test_a_killed_server_leaves_no_metrics_directory_behind(model_dir, tmp_path):
    env = {"OODSERVE_MODEL_DIR": str(model_dir), "OODSERVE_WORKERS": "2", "OODSERVE_THREADS": "1"}
    env["TMPDIR"] = str(tmp_path)  # where `python -m service` makes its metrics directory
    base = tmp_path / f"oodserve-metrics-{os.getuid()}"
    with ServerProcess(env) as killed:
        parent = killed.process.pid
        assert (base / str(parent)).is_dir()
        workers = [int(pid) for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        killed.process.kill()  # SIGKILL: no atexit, no cleanup
        killed.process.wait(timeout=30)
        for pid in workers:  # orphaned now; a container's end would take them with it
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(pid_alive(pid) for pid in workers), what="the orphaned workers to die")
    assert (base / str(parent)).is_dir()
    with ServerProcess(env) as server:
        assert sorted(p.name for p in base.iterdir()) == [str(server.process.pid)]
    assert list(base.iterdir()) == []  # and a server that stops normally removes its own


def test_a_real_prometheus_scrapes_the_service(server, tmp_path):
    prometheus = require_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    target = server.url.removeprefix("http://")
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: oodserve, static_configs: [{{targets: ['{target}']}}]}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        send_digits(server.url, 3)
        query = 'sum(oodserve_requests_total{job="oodserve",endpoint="/predict",status="200"})'

        def counted() -> float:
            try:
                result = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}).json()
            except (httpx.TransportError, ValueError):
                return 0.0
            samples = result.get("data", {}).get("result", [])
            return float(samples[0]["value"][1]) if samples else 0.0

        wait_until(lambda: counted() >= 3, timeout=60, what=f"Prometheus to answer {query} with >= 3")
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_labels_stay_bounded_whatever_clients_send(server, client):
    client.post("/predict", params={"model": "made-up-name-123"}, content=b"x", headers={"content-type": "image/png"})
    client.get("/no/such/path/456")
    text = server.metrics()
    assert "made-up-name-123" not in text and "/no/such/path" not in text
    assert metric(text, "oodserve_requests_total", endpoint="/predict", model="", status="404") >= 1
    assert metric(text, "oodserve_requests_total", endpoint="unmatched", status="404") >= 1
