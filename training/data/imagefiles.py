"""Labelled image files, ``<split>/<class>/<image>``, in a folder or a zip: one reader for training and evaluation.

This is the layout of ``torchvision.datasets.ImageFolder`` and of CIFAR-10 as JPEG/PNG files (e.g. the
``cifar10-jpg.zip`` that ``../shared/data`` holds). A class is its folder's name, classes are sorted; every
image is brought to the mode and size of the first one read (gray stays gray, anything else becomes RGB).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class NoImages(RuntimeError):
    """The path holds no images in the expected layout; the message says what was looked for."""


def has_split(path: Path, split: str) -> bool:
    """Whether ``path`` (a folder or a .zip) has a ``split/`` folder."""
    if path.suffix == ".zip" and path.is_file():
        with zipfile.ZipFile(path) as archive:
            return any(m.startswith(f"{split}/") for m in archive.namelist())
    return (path / split).is_dir()


def read(
    path: Path, split: str | None = None, *, n: int | None = None, seed: int = 0, size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Images under ``path/split`` (or all of ``path`` when split is None or absent) as uint8 [N, C, H, W],
    int64 labels and the sorted class names. ``n`` decodes only a seeded subset; ``size`` = (width, height)."""
    entries, open_entry = listing(path, split)
    parent = lambda m: m.replace("\\", "/").rsplit("/", 2)[-2] if "/" in m.replace("\\", "/") else ""
    classes = tuple(sorted({parent(m) for m in entries}))
    picked = [entries[i] for i in subsample(len(entries), n, seed)]
    from PIL import Image

    images, mode = [], None
    for m in picked:
        with Image.open(open_entry(m)) as im:
            if mode is None:
                mode = "L" if im.mode in ("L", "1", "I;16", "I") else "RGB"
                size = size or im.size
            im = im.convert(mode)
            images.append(np.asarray(im if im.size == size else im.resize(size, Image.BILINEAR)))
    x = torch.from_numpy(np.stack(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([classes.index(parent(m)) for m in picked]), classes


def listing(path: Path, split: str | None) -> tuple[list[str], Callable]:
    """The image entries under ``path/split`` (or all of ``path``), sorted, and a function opening one."""
    if path.suffix == ".zip" and path.is_file():
        archive = zipfile.ZipFile(path)
        names = [m for m in archive.namelist() if m.lower().endswith(IMAGE_SUFFIXES)]
        under = [m for m in names if split and m.startswith(f"{split}/")]
        entries, open_entry = sorted(under or names), lambda m: io.BytesIO(archive.read(m))
    elif path.is_dir():
        base = path / split if split and (path / split).is_dir() else path
        entries = sorted(str(p) for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        open_entry = lambda m: m
    else:
        raise NoImages(f"{path} is neither a folder nor a .zip file")
    if not entries:
        raise NoImages(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    return entries, open_entry


def subsample(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of n out of n_total (all of them when n is None or too large)."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))
