"""The models the serving bench drives: the bundled LeNet, the bundled photo model (3x32x32), and the int8
files beside them (``NAME-int8.onnx``, written by ``make models``).

The photo model is the bundled CIFAR-10 file (``models/cifar10-*.onnx``) when the checkout has one;
otherwise a resnet_small is exported with training's own path (``training.nets.models.build`` +
``training.export.to_onnx``) with random weights: the bench measures serving cost, which does not depend on
what the weights learnt.
That file's calibration is copied from the bundled LeNet (a p-value needs some sorted scores, not good ones).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
LENET = ROOT / "models" / "mnist-acet-lenet.onnx"
DIGITS = ROOT / "tests" / "data" / "mnist-t10k-heldout"


def int8_sibling(path: Path) -> Path | None:
    """``NAME-int8.onnx`` beside ``NAME.onnx``, when the checkout has it."""
    sibling = path.with_name(f"{path.stem}-int8.onnx")
    return sibling if sibling.is_file() else None


def photo_model(cache: Path) -> Path:
    """The bundled CIFAR-10 model, else the untrained resnet_small below."""
    bundled = sorted(p for p in (ROOT / "models").glob("cifar10-*.onnx") if not p.stem.endswith("-int8"))
    return bundled[0] if bundled else resnet_small(cache)


def resnet_small(cache: Path) -> Path:
    """``cache/bench-resnet-small.onnx``, a resnet_small with random weights exported on first use (about 20 s
    with torch)."""
    path = cache / "bench-resnet-small.onnx"
    if path.exists():
        return path
    import torch

    from modelfile import InputSpec, ModelMetadata, write_metadata
    from service.models.runtime import ModelRuntime
    from training.data.datasets import DatasetInfo
    from training.export import to_onnx
    from training.methods.plain import Plain
    from training.nets import models

    torch.manual_seed(0)
    classes = tuple(f"class{i}" for i in range(10))
    info = DatasetInfo("cifar10", classes, 3, 32, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    method = Plain()
    model = models.build("resnet_small", info, method.make_head).eval()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / "bench-resnet-small.tmp.onnx"
    to_onnx(model, method, info, tmp)
    lenet = ModelRuntime(LENET, threads=1, providers=["CPUExecutionProvider"]).metadata
    meta = ModelMetadata(
        **{
            **json.loads(lenet.to_json()),
            "name": "bench-resnet-small",
            "version": "0-untrained",
            "method": "plain (untrained, for benchmarks)",
            "architecture": "resnet_small",
            "classes": list(classes),
            "input": InputSpec(channels=3, height=32, width=32, color_mode="RGB", resize="stretch").model_dump(),
        }
    )
    write_metadata(tmp, meta)
    tmp.rename(path)
    return path


def lenet_upload() -> bytes:
    """One held-out MNIST digit as its PNG file (what a client uploads)."""
    return sorted(DIGITS.glob("*.png"))[0].read_bytes()


def cifar_like_upload() -> bytes:
    """A 32x32 RGB JPEG (quality 90), like a CIFAR-10 image a client would upload."""
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    im = Image.fromarray(smooth).resize((32, 32), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
