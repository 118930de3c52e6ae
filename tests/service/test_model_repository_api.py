"""The model repository extension with the stock ``tritonclient``: index,
load and unload against a real server, and 403 while the setting is off."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from servers import DEFAULT_MODEL, REPO, ServerThread, settings_for
from stand_in import metadata, write_corrupt_model, write_model
from tritonclient.utils import InferenceServerException

from service.settings import Settings


def version_file(repository, name: str, version: int):
    path = repository / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def infer_version(client: triton.InferenceServerClient, name: str, version: str = "") -> str:
    tensor = triton.InferInput("images", [1, 1, 28, 28], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1, 28, 28), dtype=np.float32))
    return client.infer(name, [tensor], model_version=version).get_response()["model_version"]


@pytest.fixture
def repository(tmp_path):
    shutil.copy(REPO / "models" / f"{DEFAULT_MODEL}.onnx", tmp_path)
    write_model(version_file(tmp_path, "extra", 1), metadata("extra"))
    return tmp_path


def test_load_and_unload_with_tritonclient(repository):
    with ServerThread(settings_for(repository, model_repository_api=True)) as server:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        assert "model_repository" in client.get_server_metadata()["extensions"]
        index = {(row["name"], row["version"]): row["state"] for row in client.get_model_repository_index()}
        assert index == {(DEFAULT_MODEL, "1"): "READY", ("extra", "1"): "READY"}

        client.unload_model("extra")
        assert not client.is_model_ready("extra")
        assert {r["name"]: r["state"] for r in client.get_model_repository_index()}["extra"] == "UNAVAILABLE"

        write_model(version_file(repository, "extra", 2), metadata("extra"))
        client.load_model("extra")
        assert client.is_model_ready("extra") and infer_version(client, "extra") == "2"

        # A corrupt new version: refused with the reason, the version before keeps serving.
        write_corrupt_model(version_file(repository, "extra", 3))
        with pytest.raises(InferenceServerException, match=r"extra/3/model.onnx: not a loadable ONNX model"):
            client.load_model("extra")
        assert infer_version(client, "extra") == "2"
        assert "extra/3/model.onnx" in httpx.get(f"{server.url}/models").json()["failures"]

        with pytest.raises(InferenceServerException, match="no model 'nothing'"):
            client.load_model("nothing")
        with pytest.raises(InferenceServerException, match="not supported"):
            client.load_model(DEFAULT_MODEL, config='{"backend": "onnxruntime"}')
        assert infer_version(client, DEFAULT_MODEL) == "1"  # untouched by all of the above


def test_repository_extension_is_refused_while_disabled(repository):
    with ServerThread(settings_for(repository)) as server:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        assert "model_repository" not in client.get_server_metadata()["extensions"]
        for call in (client.get_model_repository_index, lambda: client.unload_model("extra")):
            with pytest.raises(InferenceServerException, match="disabled") as refused:
                call()
            assert refused.value.status() == "403"
        assert client.is_model_ready("extra")  # the refused unload changed nothing


def test_repository_extension_needs_one_worker():
    with pytest.raises(ValueError, match="needs workers = 1"):
        Settings(model_repository_api=True, workers=2)
