"""The model file's input-domain guard (training.export.domain_guard): an exported file gives an input outside
[0, 1] the largest ood_score, so it is rejected at any threshold, while the network alone accepts it with
full confidence; images inside the domain keep the network's own score; the command adds the guard to a
file exported without it, once."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from modelfile import DOMAIN_TOLERANCE, INPUT_NAME, OUT_OF_DOMAIN_SCORE, OUTPUT_NAMES, read_metadata
from training.export import Deployable
from training.run.checkpoint import build_model
from training.run.checkpoint import load as load_checkpoint


def run(path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities, score, _ = ort.InferenceSession(str(path)).run(None, {INPUT_NAME: x.astype(np.float32)})
    return probabilities, score


def network_score(ckpt, x: np.ndarray) -> np.ndarray:
    model, method, _ = build_model(load_checkpoint(ckpt))
    with torch.no_grad():
        return Deployable(model.eval(), method)(torch.from_numpy(x.astype(np.float32)))[1].numpy()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)


def test_inputs_outside_the_image_domain_are_rejected_whatever_the_network_says(rgb_resnet, images):
    ckpt, path = rgb_resnet
    threshold = read_metadata(path).calibration.threshold
    mean, std = np.array([0.49, 0.48, 0.45])[:, None, None], np.array([0.25, 0.24, 0.26])[:, None, None]
    one_pixel = images.copy()
    one_pixel[:, 1, 7, 9] = -0.1
    outside = {
        "x100 noise": 100 * images,
        "0-255 pixels": np.round(255 * images),
        "mean/std normalised": (images - mean) / std,
        "one pixel at -0.1": one_pixel,
    }
    for what, x in outside.items():
        _, score = run(path, x)
        assert (score == np.float32(OUT_OF_DOMAIN_SCORE)).all() and (score > threshold).all(), what
    # what the guard is for: the network alone is near-certain on the scaled images
    probabilities, _ = run(path, 1000 * images)
    assert (score_alone := network_score(ckpt, 1000 * images)).max() < OUT_OF_DOMAIN_SCORE
    assert probabilities.max(1).min() > 0.9, (probabilities.max(1), score_alone)


def test_images_inside_the_domain_keep_the_networks_score(rgb_resnet, images):
    ckpt, path = rgb_resnet
    x = images.copy()
    x[0], x[1] = 0.0, 1.0
    x[2, 0, 0, 0], x[3, 0, 0, 0] = -0.9 * DOMAIN_TOLERANCE, 1 + 0.9 * DOMAIN_TOLERANCE  # within the slack
    _, score = run(path, x)
    np.testing.assert_allclose(score, network_score(ckpt, x), rtol=1e-4, atol=1e-5)


def test_the_command_guards_a_file_exported_without_it_once(plain_ckpt, tmp_path):
    model, method, _ = build_model(load_checkpoint(plain_ckpt))
    path = tmp_path / "unguarded.onnx"
    torch.onnx.export(
        Deployable(model, method).eval(),
        (torch.rand(2, 1, 28, 28),),
        str(path),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={"images": {0: torch.export.Dim("N")}},
        dynamo=True,
        verbose=False,
    )
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    x[2:] *= 255
    before = run(path, x)
    assert (before[1] < OUT_OF_DOMAIN_SCORE).all()

    cmd = [sys.executable, "-m", "training.export.domain_guard", str(path)]
    first, second = (subprocess.run(cmd, capture_output=True, text=True, check=True).stdout for _ in range(2))
    assert "guard added" in first and "already guarded" in second
    probabilities, score = run(path, x)
    np.testing.assert_array_equal(probabilities, before[0])
    np.testing.assert_array_equal(score[:2], before[1][:2])
    assert (score[2:] == np.float32(OUT_OF_DOMAIN_SCORE)).all()
    assert sum(n.name.startswith("domain_guard/") for n in onnx.load(str(path)).graph.node) == 6
