"""Model loading: a broken model file keeps the service not ready, with a log line naming it."""

from __future__ import annotations

import shutil

import httpx
from samples import digit_png
from servers import DEFAULT_MODEL, ServerProcess, ServerThread, answers, settings_for, wait_until
from stand_in import metadata, write_corrupt_model, write_model


def not_ready_reason(url: str) -> str:
    """Models load before the server answers, so the first /readyz is final: return its reason."""
    wait_until(lambda: answers(f"{url}/healthz"), what="the server to answer")
    response = httpx.get(f"{url}/readyz")
    body = response.json()
    assert response.status_code == 503 and body["ready"] is False, body
    return body["reason"]


def test_corrupt_model_file_leaves_the_service_not_ready_with_a_clear_log_line(model_dir, tmp_path):
    shutil.copy(model_dir / f"{DEFAULT_MODEL}.onnx", tmp_path)
    write_corrupt_model(tmp_path / "broken.onnx")
    with ServerProcess({"OODSERVE_MODEL_DIR": str(tmp_path)}, wait_ready=False) as server:
        line = server.wait_for_log(r"ERROR .*broken\.onnx")
        assert "could not be loaded" in line and "NOT ready" in line and "not a loadable ONNX model" in line
        assert "broken.onnx" in not_ready_reason(server.url)  # alive, just not ready
        v2 = httpx.get(f"{server.url}/v2/health/ready")
        assert v2.status_code == 503 and "broken.onnx" in v2.json()["error"]
        # The models that did load still answer requests that name them.
        png, label = digit_png(0)
        response = httpx.post(f"{server.url}/predict", content=png, headers={"content-type": "image/png"})
        assert response.status_code == 200 and response.json()["predictions"][0]["label"] == str(label)
        listing = httpx.get(f"{server.url}/models").json()
        assert "broken.onnx" in listing["failures"]


def test_a_model_that_breaks_the_contract_is_named_too(tmp_path):
    write_model(tmp_path / f"{DEFAULT_MODEL}.onnx", metadata(DEFAULT_MODEL))
    write_model(tmp_path / "liar.onnx", metadata("liar"), graph_classes=3)
    with ServerThread(settings_for(tmp_path), wait_ready=False) as server:
        reason = not_ready_reason(server.url)
        response = httpx.post(
            f"{server.url}/predict", params={"model": "liar"}, content=b"x", headers={"content-type": "image/png"}
        )
    assert "liar.onnx" in reason and "3" in reason and "10 classes" in reason
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"


def test_missing_default_model_is_not_ready(tmp_path):
    write_model(tmp_path / "other.onnx", metadata("other"))
    with ServerThread(settings_for(tmp_path), wait_ready=False) as server:
        assert f"default model '{DEFAULT_MODEL}'" in not_ready_reason(server.url)


def test_empty_model_directory_is_not_ready(tmp_path):
    with ServerThread(settings_for(tmp_path / "nothing-here"), wait_ready=False) as server:
        assert "no *.onnx model files" in not_ready_reason(server.url)


def test_two_files_with_one_model_name_are_refused(tmp_path):
    write_model(tmp_path / "a.onnx", metadata(DEFAULT_MODEL))
    write_model(tmp_path / "b.onnx", metadata(DEFAULT_MODEL))
    with ServerThread(settings_for(tmp_path), wait_ready=False) as server:
        assert "already served from a.onnx" in not_ready_reason(server.url)
