"""Model versions going live under load: a real server in poll mode, real
requests from two threads the whole time, a new version copied into the repository, then a corrupt one.
Also: selecting versions on every route, and the version policy."""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from samples import digit_png
from servers import DEFAULT_MODEL, REPO, ServerProcess, ServerThread, metric, settings_for, wait_until
from stand_in import metadata, write_corrupt_model, write_model

POLL_S = 0.2


class SteadyLoad:
    """Two closed-loop clients posting a digit until stopped; every outcome and answering version kept."""

    def __init__(self, url: str, *, keep_alive: bool = True):
        self.url = url
        # A new connection per request spreads requests over several workers' shared socket.
        self._limits = httpx.Limits(max_keepalive_connections=None if keep_alive else 0)
        self.outcomes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(2)]

    def _client(self) -> None:
        png, _ = digit_png(3)
        with httpx.Client(base_url=self.url, timeout=30, limits=self._limits) as client:
            while not self._stop.is_set():
                try:
                    r = client.post("/predict", content=png, headers={"content-type": "image/png"})
                    outcome, version = str(r.status_code), r.json().get("model_version")
                except httpx.HTTPError as e:
                    outcome, version = type(e).__name__, None
                with self._lock:
                    self.outcomes[outcome] += 1
                    if version is not None:
                        self.versions[version] += 1

    def count(self, version: str) -> int:
        with self._lock:
            return self.versions[version]

    def __enter__(self) -> SteadyLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def publish(model_file: Path, repository: Path, version: int) -> Path:
    """Copy a model file into NAME/VERSION/model.onnx the way docs/service.md says: write beside it, then
    rename, so that a scan never reads half a file."""
    target = repository / DEFAULT_MODEL / str(version) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(".model.onnx.partial")
    shutil.copyfile(model_file, staging)
    os.replace(staging, target)
    return target


def served_versions(url: str) -> dict[str, str]:
    listing = httpx.get(f"{url}/models", timeout=10).json()
    return {m["version"]: m["source"] for m in listing["models"] if m["name"] == DEFAULT_MODEL}


def test_new_and_corrupt_versions_go_live_without_a_failed_request(tmp_path, caplog):
    repository = tmp_path / "repository"
    publish(REPO / "models" / f"{DEFAULT_MODEL}.onnx", repository, 1)
    second = write_model(tmp_path / "second.onnx", metadata(DEFAULT_MODEL))  # another real model, same name
    corrupt = write_corrupt_model(tmp_path / "corrupt.onnx")
    with ServerThread(settings_for(repository, model_poll_s=POLL_S)) as server, SteadyLoad(server.url) as load:
        wait_until(lambda: load.count("1") >= 20, what="steady load on version 1")
        publish(second, repository, 2)
        # Poll interval + load + warm-up; the deadline only bounds a broken test.
        wait_until(lambda: load.count("2") >= 20, timeout=30, what="version 2 to answer")
        assert served_versions(server.url) == {"2": f"{DEFAULT_MODEL}/2/model.onnx"}  # policy: newest 1
        # Version 1's batcher drains and its session goes once its last request is answered.
        wait_until(lambda: f"released model '{DEFAULT_MODEL}' version 1" in caplog.text, what="version 1 released")

        publish(corrupt, repository, 3)
        failures = wait_until(
            lambda: httpx.get(f"{server.url}/models").json()["failures"], timeout=30, what="version 3 refused"
        )
        answered_by_2 = load.count("2")
        wait_until(lambda: load.count("2") >= answered_by_2 + 20, what="version 2 to keep answering")
        assert list(failures) == [f"{DEFAULT_MODEL}/3/model.onnx"]
        assert "not a loadable ONNX model" in failures[f"{DEFAULT_MODEL}/3/model.onnx"]
        assert httpx.get(f"{server.url}/readyz").status_code == 200  # a refused update keeps the pod in service
        metrics = server.metrics()
    assert set(load.outcomes) == {"200"}, load.outcomes  # not one failure or 5xx during either swap
    assert load.count("3") == 0
    assert f'oodserve_model_loads_total{{model="{DEFAULT_MODEL}",result="refused"}} 1.0' in metrics
    assert f'oodserve_model_loads_total{{model="{DEFAULT_MODEL}",result="unloaded"}} 1.0' in metrics


def test_versions_are_selected_on_every_route(tmp_path):
    write_model(tmp_path / f"{DEFAULT_MODEL}.onnx", metadata(DEFAULT_MODEL))  # flat: version 1
    three = tmp_path / DEFAULT_MODEL / "3" / "model.onnx"
    three.parent.mkdir(parents=True)
    shutil.copyfile(REPO / "models" / f"{DEFAULT_MODEL}.onnx", three)
    (tmp_path / DEFAULT_MODEL / "not-a-version").mkdir()  # ignored, as Triton does
    png, _ = digit_png(0)
    with ServerThread(settings_for(tmp_path, model_versions=0)) as server, httpx.Client(base_url=server.url) as c:
        assert served_versions(server.url) == {"1": f"{DEFAULT_MODEL}.onnx", "3": f"{DEFAULT_MODEL}/3/model.onnx"}

        def predicted_version(**params: str) -> str:
            r = c.post("/predict", params=params, content=png, headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            return r.json()["model_version"]

        assert predicted_version() == "3" and predicted_version(version="1") == "1"
        missing = c.post("/predict", params={"version": "2"}, content=png, headers={"content-type": "image/png"})
        assert missing.status_code == 404 and "no version '2'" in missing.json()["error"]["message"]
        assert c.get(f"/models/{DEFAULT_MODEL}", params={"version": "1"}).json()["source"] == f"{DEFAULT_MODEL}.onnx"
        assert c.get(f"/v2/models/{DEFAULT_MODEL}").json()["versions"] == ["3", "1"]
        assert c.get(f"/v2/models/{DEFAULT_MODEL}/versions/1/ready").json()["ready"] is True
        body = {"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
        for version in ("1", "3"):
            r = c.post(f"/v2/models/{DEFAULT_MODEL}/versions/{version}/infer", json=body)
            assert r.status_code == 200 and r.json()["model_version"] == version
        assert c.post(f"/v2/models/{DEFAULT_MODEL}/versions/2/infer", json=body).status_code == 404


def test_the_directory_names_the_model_whatever_its_metadata_says(tmp_path, caplog):
    """Triton's layout: the bundled digits model copied to digits/1/model.onnx is the model 'digits',
    served beside the same file under its own name, on every route and in the metrics."""
    shutil.copy(REPO / "models" / f"{DEFAULT_MODEL}.onnx", tmp_path)
    copy = tmp_path / "digits" / "1" / "model.onnx"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(REPO / "models" / f"{DEFAULT_MODEL}.onnx", copy)
    png, _ = digit_png(0)
    with ServerThread(settings_for(tmp_path)) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        listing = c.get("/models").json()
        r = c.post("/predict", params={"model": "digits"}, content=png, headers={"content-type": "image/png"})
        body = {"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
        v2 = c.post("/v2/models/digits/infer", json=body)
        metrics = server.metrics()
    assert {(m["name"], m["source"]) for m in listing["models"]} == {
        (DEFAULT_MODEL, f"{DEFAULT_MODEL}.onnx"),
        ("digits", "digits/1/model.onnx"),
    }
    assert listing["failures"] == {}
    assert r.status_code == 200 and r.json()["model"] == "digits", r.text
    assert v2.status_code == 200 and v2.json()["model_name"] == "digits", v2.text
    assert metric(metrics, "oodserve_images_total", model="digits") == 2
    assert metric(metrics, "oodserve_model_info", model="digits") == 1
    assert f"its metadata names the model '{DEFAULT_MODEL}'; serving it as 'digits'" in caplog.text


@pytest.mark.parametrize("keep", [1, 2])
def test_version_policy_serves_the_newest_versions(tmp_path, keep):
    for version in (1, 2, 5):
        path = tmp_path / DEFAULT_MODEL / str(version) / "model.onnx"
        path.parent.mkdir(parents=True)
        write_model(path, metadata(DEFAULT_MODEL))
    with ServerThread(settings_for(tmp_path, model_versions=keep)) as server:
        versions = sorted(served_versions(server.url), key=int)
    assert versions == (["5"] if keep == 1 else ["2", "5"])


def test_every_worker_converges_on_the_new_version(tmp_path):
    """Two workers, each polling on its own: both load version 2 (the loads counter sums the
    workers), and requests spread over both see no failure while they do."""
    repository = tmp_path / "repository"
    publish(REPO / "models" / f"{DEFAULT_MODEL}.onnx", repository, 1)
    second = write_model(tmp_path / "second.onnx", metadata(DEFAULT_MODEL))
    env = {"OODSERVE_MODEL_DIR": str(repository), "OODSERVE_WORKERS": "2", "OODSERVE_THREADS": "1"}
    with ServerProcess({**env, "OODSERVE_MODEL_POLL_S": str(POLL_S)}) as server:

        def loads() -> float:
            return metric(httpx.get(f"{server.url}/metrics").text, "oodserve_model_loads_total", result="loaded")

        wait_until(lambda: loads() == 2, what="both workers to load version 1")
        with SteadyLoad(server.url, keep_alive=False) as load:
            wait_until(lambda: load.count("1") >= 10, what="steady load on version 1")
            publish(second, repository, 2)
            wait_until(lambda: loads() == 4, timeout=60, what="both workers to load version 2")
            answered_by_2 = load.count("2")
            wait_until(lambda: load.count("2") >= answered_by_2 + 20, what="version 2 to answer")
            versions_before = load.count("1")
            wait_until(lambda: load.count("2") >= answered_by_2 + 40, what="more answers")
        assert load.count("1") == versions_before  # once both workers swapped, version 1 answers nothing
        assert set(load.outcomes) == {"200"}, load.outcomes


def test_a_file_replaced_in_place_is_swapped_as_the_same_version(tmp_path):
    write_model(tmp_path / f"{DEFAULT_MODEL}.onnx", metadata(DEFAULT_MODEL, threshold=0.5))
    replacement = write_model(tmp_path / "staging" / "new.onnx", metadata(DEFAULT_MODEL, threshold=0.7))
    with ServerThread(settings_for(tmp_path, model_poll_s=POLL_S)) as server:
        os.replace(replacement, tmp_path / f"{DEFAULT_MODEL}.onnx")

        def threshold() -> float:
            return httpx.get(f"{server.url}/models/{DEFAULT_MODEL}").json()["threshold"]

        wait_until(lambda: threshold() == pytest.approx(0.7), what="the replaced file to be served")
        assert served_versions(server.url) == {"1": f"{DEFAULT_MODEL}.onnx"}
