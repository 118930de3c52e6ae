"""An RGB resnet_small, trained here on CIFAR-10 image files and exported, served unchanged by the real
service: a real RGB JPEG through ``POST /predict`` and through the v2 endpoint
with the stock ``tritonclient``, and both answers are the model's own numbers."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from cifar10_fixture import CLASSES
from PIL import Image
from servers import ServerThread, settings_for

from modelfile import read_metadata
from service.pipeline.imaging import DecodeLimits, load_image
from training.run.checkpoint import build_model
from training.run.checkpoint import load as load_checkpoint


def chelsea_jpeg(width: int = 240) -> bytes:
    """scikit-image's cat photo (451 x 300 RGB), downscaled and saved as a JPEG, as a user would send it."""
    import skimage.data

    im = Image.fromarray(skimage.data.chelsea())
    im = im.resize((width, round(im.height * width / im.width)), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(rgb_resnet, tmp_path_factory):
    """(server, model name, checkpoint) with the exported model as the default model."""
    ckpt, onnx = rgb_resnet
    model_dir = tmp_path_factory.mktemp("rgb-models")
    (model_dir / onnx.name).write_bytes(onnx.read_bytes())
    with ServerThread(settings_for(model_dir, default_model=onnx.stem)) as server:
        yield server, onnx.stem, ckpt


def torch_outputs(ckpt: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model, method, _ = build_model(load_checkpoint(ckpt))
    with torch.no_grad():
        probs, score, _ = method.outputs(model.eval(), torch.from_numpy(x))
    return probs.numpy(), score.numpy()


def test_a_photo_jpeg_through_predict_is_scored_by_the_trained_model(served):
    server, name, ckpt = served
    jpeg = chelsea_jpeg()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        body = client.post("/predict", files={"file": ("chelsea.jpg", jpeg, "image/jpeg")}).json()
    assert body["model"] == name
    [p] = body["predictions"]
    assert list(p["probabilities"]) == list(CLASSES) and p["label"] in CLASSES
    # what the service decoded (RGB, 32x32) is what the checkpoint scores the same way
    spec = read_metadata(next(Path(server.settings.model_dir).glob("*.onnx"))).input
    x = load_image(jpeg, spec, DecodeLimits(10**7))[None]
    assert x.shape == (1, 3, 32, 32) and not np.allclose(x[0, 0], x[0, 1])  # colour, not gray
    probs, score = torch_outputs(ckpt, x)
    assert p["label"] == CLASSES[int(probs[0].argmax())]
    assert p["ood_score"] == pytest.approx(float(score[0]), abs=1e-4)
    assert p["is_ood"] == (p["ood_score"] > p["threshold"])


def test_the_same_jpeg_through_tritonclient_gives_the_predict_answer(served):
    server, name, _ = served
    jpeg = chelsea_jpeg()
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
        spec = read_metadata(next(Path(server.settings.model_dir).glob("*.onnx"))).input
        x = load_image(jpeg, spec, DecodeLimits(10**7))[None]
        tensor = triton.InferInput("images", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(name, [tensor])
    finally:
        client.close()
    probs, scores, is_ood = (result.as_numpy(n) for n in ("probabilities", "ood_score", "is_ood"))
    assert probs.shape == (1, 10) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        [p] = http.post("/predict", files={"file": ("chelsea.jpg", jpeg, "image/jpeg")}).json()["predictions"]
    assert p["label"] == CLASSES[int(probs[0].argmax())]
    assert p["ood_score"] == pytest.approx(float(scores[0]), abs=1e-6) and p["is_ood"] == bool(is_ood[0])
    assert [p["probabilities"][c] for c in CLASSES] == pytest.approx(probs[0].tolist(), abs=1e-6)
