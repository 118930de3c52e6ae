"""Responses name files, never filesystem paths; a service with nothing to serve answers 503."""

from __future__ import annotations

import re
import shutil

import httpx
from samples import digit_png
from servers import DEFAULT_MODEL, ServerThread, answers, settings_for, wait_until
from stand_in import metadata, write_corrupt_model, write_model

# Any absolute path of two or more components, e.g. /tmp/pytest-1/models/broken.onnx.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"():,;]+/)+[^\s/'\"():,;]+")


def bodies(url: str) -> dict[str, httpx.Response]:
    png, _ = digit_png(0)
    image = {"content": png, "headers": {"content-type": "image/png"}}
    return {
        "/readyz": httpx.get(f"{url}/readyz"),
        "/models": httpx.get(f"{url}/models"),
        "/v2/health/ready": httpx.get(f"{url}/v2/health/ready"),
        "/predict": httpx.post(f"{url}/predict", **image),
        "/predict?model=broken": httpx.post(f"{url}/predict", params={"model": "broken"}, **image),
        "/models/broken": httpx.get(f"{url}/models/broken"),
        "/v2/models/broken/infer": httpx.post(f"{url}/v2/models/broken/infer", content=b"{}"),
    }


def assert_no_paths(responses: dict[str, httpx.Response], *forbidden: str) -> None:
    for route, response in responses.items():
        for text in forbidden:
            assert text not in response.text, f"{route} discloses {text!r}: {response.text}"
        assert not ABSOLUTE_PATH.search(response.text), f"{route} discloses a path: {response.text}"


def test_a_broken_model_file_is_named_without_its_path(model_dir, tmp_path):
    shutil.copy(model_dir / f"{DEFAULT_MODEL}.onnx", tmp_path)
    write_corrupt_model(tmp_path / "broken.onnx")
    with ServerThread(settings_for(tmp_path), wait_ready=False) as server:
        wait_until(lambda: answers(f"{server.url}/readyz", 503), what="/readyz to say not ready")
        responses = bodies(server.url)
    assert_no_paths(responses, str(tmp_path))
    assert "broken.onnx" in responses["/readyz"].json()["reason"]
    assert "broken.onnx" in responses["/models"].json()["failures"]
    assert responses["/predict"].status_code == 200  # the model that loaded still answers


def test_a_model_that_breaks_the_contract_is_named_without_its_path(tmp_path):
    write_model(tmp_path / f"{DEFAULT_MODEL}.onnx", metadata(DEFAULT_MODEL))
    write_model(tmp_path / "broken.onnx", metadata("broken"), graph_classes=3)
    with ServerThread(settings_for(tmp_path), wait_ready=False) as server:
        wait_until(lambda: answers(f"{server.url}/readyz", 503), what="/readyz to say not ready")
        responses = bodies(server.url)
    assert_no_paths(responses, str(tmp_path))
    response = responses["/predict?model=broken"]
    assert response.status_code == 503 and "broken.onnx" in response.json()["error"]["message"]


def test_an_empty_model_directory_is_the_servers_fault_503_without_its_path(tmp_path):
    empty = tmp_path / "nothing-here"
    with ServerThread(settings_for(empty), wait_ready=False) as server:
        wait_until(lambda: answers(f"{server.url}/readyz", 503), what="/readyz to say not ready")
        responses = bodies(server.url)
    assert_no_paths(responses, str(empty), "nothing-here")
    for route in ("/predict", "/predict?model=broken", "/models/broken", "/v2/models/broken/infer"):
        assert responses[route].status_code == 503, (route, responses[route].text)
    assert responses["/predict"].json()["error"]["code"] == "model_unavailable"
    assert "no *.onnx model files" in responses["/readyz"].json()["reason"]
