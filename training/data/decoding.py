"""The decoding workers' side of a streamed image folder (``training.data.stream``): a photo's working image, its
random resized crop drawn from ``(seed, epoch, index)``, a bounded cache. Numpy and Pillow only: the workers never
run torch (a forked worker shares its parent's torch pages, untouched), so each adds tens of MiB, not hundreds.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np


class UnreadableImage(ValueError):
    """A file of the folder that is no readable image; the message is one line naming it."""


def _readable(path: str, read):
    try:
        return read()
    except Exception as e:  # Pillow raises many types for a file that is not a readable image
        raise UnreadableImage(f"{path}: not a readable image ({' '.join(str(e).split())[:120]})") from None


CROP_AREA = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
WORKING = 2  # the working image's shorter side, in training sizes


Box = tuple[float, float, float, float]


def crop_box(width: int, height: int, seed: int, epoch: int, index: int) -> tuple[Box, bool]:
    """Image ``index``'s random resized crop (left, top, right, bottom) in epoch ``epoch``, and whether to flip it:
    torchvision's RandomResizedCrop algorithm (ten tries, then the central crop of the nearest allowed aspect),
    drawn from its own generator."""
    rng = np.random.default_rng([seed, epoch, index])
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*CROP_AREA)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
        if w <= width and h <= height:
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return (left, top, left + w, top + h), bool(rng.random() < 0.5)
    ratio = min(max(width / height, CROP_RATIO[0]), CROP_RATIO[1])
    w, h = (width, width / ratio) if width / height < ratio else (height * ratio, height)
    left, top = (width - w) / 2, (height - h) / 2
    return (left, top, left + w, top + h), bool(rng.random() < 0.5)


def working_image(path: str, size: int):
    """The decoded image every crop of ``path`` is cut from: RGB, upright, ``WORKING x size`` on its shorter side
    (or smaller, if the file is)."""
    from PIL import Image, ImageOps

    from modelfile.pixels import to_color_mode

    side = WORKING * size
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (side, side))
        im = ImageOps.exif_transpose(to_color_mode(im, "RGB") if im.mode != "RGB" else im)
        im.load()
        short = min(im.size)
        if short > side:
            scale = side / short
            size_now = (round(im.width * scale), round(im.height * scale))
            im = im.resize(size_now, Image.Resampling.BILINEAR, reducing_gap=2)
        return im.copy()


class _Cache:
    """Working images by index, least recently used out first, at most ``budget`` bytes."""

    def __init__(self, budget: int):
        self.budget, self.used, self.items = budget, 0, OrderedDict()

    def get(self, index: int, path: str, size: int):
        im = self.items.get(index)
        if im is not None:
            self.items.move_to_end(index)
            return im
        im = working_image(path, size)
        nbytes = im.width * im.height * 3
        while self.items and self.used + nbytes > self.budget:
            _, old = self.items.popitem(last=False)
            self.used -= old.width * old.height * 3
        if nbytes <= self.budget:
            self.items[index] = im
            self.used += nbytes
        return im


_cache: _Cache | None = None  # one per worker process


def start_worker(budget: int) -> None:
    global _cache
    _cache = _Cache(budget)


def crops(items: list[tuple[int, str]], size: int, seed: int, epoch: int) -> np.ndarray:
    """In a worker: the augmented N x N crops of ``items`` (index, path), uint8 [k, 3, N, N]."""
    from PIL import Image

    out = np.empty((len(items), 3, size, size), np.uint8)
    for j, (index, path) in enumerate(items):
        im = _readable(path, lambda: _cache.get(index, path, size))  # noqa: B023  (called at once)
        box, flip = crop_box(im.width, im.height, seed, epoch, index)
        crop = im.resize((size, size), Image.Resampling.BILINEAR, box=box)
        arr = np.asarray(crop)
        out[j] = (arr[:, ::-1] if flip else arr).transpose(2, 0, 1)
    return out


def served(paths: list[str], size: int) -> np.ndarray:
    """In a worker: ``paths`` decoded as the service decodes an upload for an N x N RGB model, uint8 [k, 3, N, N]."""
    from PIL import Image

    from modelfile.imagefolder import decode
    from modelfile.schema import InputSpec

    spec = InputSpec(channels=3, height=size, width=size, color_mode="RGB", resize="stretch")
    out = np.empty((len(paths), 3, size, size), np.uint8)

    def read(path: str) -> np.ndarray:
        with Image.open(path) as im:
            return np.round(decode(im, spec) * 255).astype(np.uint8)

    for j, path in enumerate(paths):
        out[j] = _readable(path, lambda: read(path))  # noqa: B023  (called at once)
    return out
