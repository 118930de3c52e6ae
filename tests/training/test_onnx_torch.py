"""``training.evaluation.onnx_torch``: a model file run by torch equals onnxruntime on it, and a gradient flows
back to the image (what an attack through a served graph needs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from training.evaluation.onnx_torch import OnnxModule
from training.evaluation.ood_sets import InputShape, photo_crops

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["cifar10-acet-oe-fastnet", "mnist-acet-lenet", "fashion-isomax-lenet"])
def test_a_bundled_file_run_by_torch_equals_onnxruntime_and_has_a_gradient(name):
    path = REPO / "models" / f"{name}.onnx"
    channels, h, w = (d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[1:])
    x = photo_crops(InputShape(channels, h, w), 16, seed=0).float().requires_grad_(True)
    ours = OnnxModule(onnx.load(str(path)))(images=x)
    theirs = ort.InferenceSession(str(path)).run(None, {"images": x.detach().numpy()})
    for a, b in zip(ours, theirs, strict=True):
        assert np.allclose(a.detach().numpy(), b, rtol=1e-4, atol=1e-5)
    (grad,) = torch.autograd.grad(ours[2].amax(1).sum(), x)
    assert grad.abs().sum() > 0


def test_an_operator_it_does_not_run_is_named(tmp_path):
    path = tmp_path / "lstm.onnx"
    torch.onnx.export(nn.LSTM(4, 4).eval(), (torch.rand(3, 2, 4),), dynamo=True).save(str(path))
    with pytest.raises(NotImplementedError, match="LSTM"):
        OnnxModule(onnx.load(str(path)))


def test_an_int8_file_runs_in_float_with_onnxruntimes_rounding(tmp_path):
    from training.export.quantize import to_int8
    from training.posthoc import graph

    path = tmp_path / "photo-int8.onnx"
    onnx.save(graph.float32_weights(onnx.load(str(REPO / "models" / "cifar10-acet-oe-fastnet.onnx"))), str(path))
    x = photo_crops(InputShape(3, 32, 32), 64, seed=0).float()
    to_int8(path, x.numpy())
    ours = OnnxModule(onnx.load(str(path)))(images=x.requires_grad_(True))
    theirs = ort.InferenceSession(str(path)).run(None, {"images": x.detach().numpy()})
    # onnxruntime's fused int8 kernels round once where the float emulation rounds per node: within a few steps
    assert np.abs(ours[2].detach().numpy() - theirs[2]).max() < 0.05
    assert (ours[2].argmax(1).numpy() == theirs[2].argmax(1)).mean() >= 0.95
    (grad,) = torch.autograd.grad(ours[2].amax(1).sum(), x)  # through the rounding, straight
    assert grad.abs().sum() > 0
