"""The in-distribution images a post-hoc score is fitted and calibrated on, split with a seed.

From a data set name: the training split (less the validation split the oodserve trainer carves with the same
seed) fits the scores; the validation split, which the classifier never trained on, gives the reference (p-value
tables), calibration and held-out parts; the test split evaluates. From a folder (``DIR/<class>/*``, decoded and
resized exactly as the service decodes an upload): one pool, split fit / reference / calibration / held-out.
Folder images must be images the classifier did not train on, or its scores on them are too confident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modelfile import InputSpec
from modelfile.imagefolder import RefusedImages, image_files, read_images

from ..data import datasets

FIT_MAX = 10_000  # fit images drawn at most: a KNN bank's size, and enough for a covariance of 1,280 features
SHARES = {"fit": 0.5, "reference": 0.15, "calibration": 0.2, "held_out": 0.15}  # of a folder's images
VAL_SHARES = {"reference": 0.3, "calibration": 0.5, "held_out": 0.2}  # of a data set's validation split


class TooFewImages(ValueError):
    """The images cannot set the threshold at the requested TPR; the message says how many are needed."""


@dataclass
class Parts:
    fit: datasets.Split
    reference: datasets.Split
    calibration: datasets.Split
    held_out: datasets.Split
    test: datasets.Split | None  # a data set's test split, for the card
    where: str  # what the images were, for the card and the calibration's split field


def minimum(tpr: float) -> int:
    """Images a part needs to expect 10 rejections at ``1 - tpr``."""
    return math.ceil(10 / (1 - tpr) - 1e-9)


def load(source: str, spec: InputSpec, classes: list[str], *, data_root: str, seed: int, tpr: float) -> Parts:
    folder = Path(source)
    parts = (
        _from_folder(folder, spec, classes, seed) if folder.is_dir() else _from_dataset(source, spec, data_root, seed)
    )
    need = minimum(tpr)
    for name in ("calibration", "held_out"):
        if len(getattr(parts, name)) < need:
            raise TooFewImages(
                f"{parts.where}: the {name.replace('_', '-')} part has {len(getattr(parts, name))} images; TPR {tpr} "
                f"needs at least {need} (10 expected rejections): give more images or a lower --tpr"
            )
    return parts


def _from_dataset(name: str, spec: InputSpec, data_root: str, seed: int) -> Parts:
    splits = datasets.load(name, data_root, seed=seed, download=False)
    info = splits.info
    if info.channels == spec.channels and spec.height == spec.width != info.height:
        splits = datasets.at_size(splits, spec.height)  # as a run with --image-size saw them (fine-tuned networks)
        info = splits.info
    if (info.channels, info.height, info.width) != (spec.channels, spec.height, spec.width):
        raise RefusedImages(
            f"{name} images are {info.channels}x{info.height}x{info.width}; the classifier takes "
            f"{spec.channels}x{spec.height}x{spec.width} (name a folder, whose images are resized as the service does)"
        )
    rng = np.random.default_rng([seed, 34])
    fit = splits.train.subset(np.sort(rng.permutation(len(splits.train))[:FIT_MAX]))
    reference, calibration, held_out = _cut(splits.val, VAL_SHARES, rng)
    return Parts(fit, reference, calibration, held_out, splits.test, f"{datasets.shown_name(name)} validation split")


def _from_folder(folder: Path, spec: InputSpec, classes: list[str], seed: int) -> Parts:
    files = image_files(folder)
    if not files:
        raise RefusedImages(f"{folder.name}: no images (PNG, JPEG, GIF, BMP, TIFF, WebP) below it")
    index = {c: i for i, c in enumerate(classes)}
    labels = [
        index.get(p.relative_to(folder).parts[0], -1) if len(p.relative_to(folder).parts) > 1 else -1 for p in files
    ]
    x = torch.from_numpy(read_images(files, spec, folder))
    pool = datasets.Split(x, torch.tensor(labels, dtype=torch.long))
    rng = np.random.default_rng([seed, 34])
    fit, reference, calibration, held_out = _cut(pool, SHARES, rng)
    return Parts(fit, reference, calibration, held_out, None, f"folder {folder.name} ({len(files)} images)")


def _cut(pool: datasets.Split, shares: dict[str, float], rng: np.random.Generator) -> list[datasets.Split]:
    perm, out, start = rng.permutation(len(pool)), [], 0
    for i, share in enumerate(shares.values()):
        stop = len(pool) if i == len(shares) - 1 else start + round(share * len(pool))
        out.append(pool.subset(np.sort(perm[start:stop])))
        start = stop
    return out
