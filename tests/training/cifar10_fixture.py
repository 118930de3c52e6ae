"""A tiny CIFAR-10 in its image-file layout, for the tests of ``--dataset cifar10`` and of RGB models."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar10_files(root: Path, n_train: int = 8, n_test: int = 3) -> Path:
    """root/{train,test}/<class>/NNNN.jpg: 32x32 RGB JPEGs, one hue per class plus noise, so that a few
    steps of training learn something a test can see."""
    rng = np.random.default_rng(0)
    for k, cls in enumerate(CLASSES):
        colour = np.array(colorsys.hsv_to_rgb(k / 10, 0.9, 0.9)) * 255
        for split, n in (("train", n_train), ("test", n_test)):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(colour + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def offline_env() -> dict[str, str]:
    """The environment of a CLI subprocess with no network: every HTTP(S) request goes to a closed port."""
    closed = "http://127.0.0.1:9"
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "http_proxy": closed,
        "https_proxy": closed,
        "OMP_NUM_THREADS": "1",
    }
