"""Outlier exposure's data: real images that are none of the model's classes (Hendrycks et al., ICLR 2019).

``--outliers PATH`` names a folder or a .zip of images of any size and count. Each image is decoded
once, shrunk so its short side is at most ``KEEP_SIDE`` pixels (memory stays bounded whatever the
files claim to be: a 12-megapixel photo is kept as ~0.2 MB), and grouped by the first folder of its
path (for ``wallpapers.zip``, the Debian package it came from). Training draws seeded square crops
from them: the side log-uniform between the model's input side and the image's short side, so a batch
holds every scale from a texture patch to the whole picture, resized to the input (antialiased) and
flipped half the time.

Groups named in ``holdout`` are never trained on; evaluation crops them the same way as an OOD set of
a source the model never saw (``training.evaluation.ood_sets``: ``outliers:PATH#GROUP+GROUP``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from . import imagefiles

KEEP_SIDE = 256


class OutlierImages:
    """Decoded outlier images (PIL, gray or RGB) and the group each came from."""

    def __init__(self, images: list, groups: list[str], source: str):
        self.images, self.groups, self.source = images, groups, source
        self._in_mode: dict[str, list] = {}  # the images converted to a model's mode, once, not per crop

    @classmethod
    def read(cls, path: str | Path, *, holdout: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> OutlierImages:
        """The images under ``path`` less the groups in ``holdout`` (or only the groups in ``only``).

        Raises ``imagefiles.NoImages`` with a one-line reason: no such folder or zip, no images in it,
        a group named that is not there, nothing left after the holdout, or a file that is not an image.
        """
        from PIL import Image, UnidentifiedImageError

        path = Path(path)
        entries, open_entry = imagefiles.listing(path, None)
        relative = [_relative(e, path) for e in entries]
        groups = [group_of(r) for r in relative]
        named = set(holdout) | set(only)
        if missing := sorted(named - set(groups)):
            raise imagefiles.NoImages(
                f"outliers: {path.name} has no group(s) {', '.join(missing)}; its groups "
                f"(first folders) are {', '.join(sorted(set(groups)))}"
            )
        keep = [i for i, g in enumerate(groups) if g not in holdout and (not only or g in only)]
        if not keep:
            raise imagefiles.NoImages(
                f"outliers: no images of {path.name} are left after holding out {', '.join(holdout)}"
            )
        images = []
        for i in keep:
            try:
                with Image.open(open_entry(entries[i])) as im:
                    im.draft("RGB", (KEEP_SIDE, KEEP_SIDE))  # JPEG: decode at a reduced scale directly
                    im = im.convert("L" if im.mode in ("L", "1", "I;16", "I") else "RGB")
                    im.thumbnail(_kept_size(im.size), Image.LANCZOS)
                    images.append(im)
            except (UnidentifiedImageError, OSError) as e:
                raise imagefiles.NoImages(
                    f"outliers: {relative[i]} in {path.name} is not a readable image ({e})"
                ) from None
        return cls(images, [groups[i] for i in keep], path.name)

    def __len__(self) -> int:
        return len(self.images)

    def crops(self, n: int, shape: tuple[int, int, int], generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random square crops as float [n, C, H, W] in [0, 1], every draw from ``generator``."""
        from PIL import Image

        c, h, w = shape
        mode = "L" if c == 1 else "RGB"
        if mode not in self._in_mode:
            self._in_mode[mode] = [im if im.mode == mode else im.convert(mode) for im in self.images]
        images = self._in_mode[mode]
        out = np.empty((n, h, w, c), dtype=np.uint8)
        for k, (i, box, flip) in enumerate(self.boxes(n, max(h, w), generator)):
            crop = images[i].resize((w, h), Image.BILINEAR, box=box)
            out[k] = np.asarray(crop.transpose(Image.FLIP_LEFT_RIGHT) if flip else crop).reshape(h, w, c)
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)

    def boxes(
        self, n: int, side: int, generator: torch.Generator | None = None
    ) -> list[tuple[int, tuple[int, int, int, int], bool]]:
        """(image index, square box, flip) of ``n`` crops: sides log-uniform from ``side`` (or the image's short
        side, if smaller) to the short side, positions uniform."""
        pick = torch.randint(0, len(self.images), (n,), generator=generator).tolist()
        u = torch.rand(n, 4, generator=generator, dtype=torch.float64).tolist()
        out = []
        for i, (s, fx, fy, flip) in zip(pick, u, strict=True):
            width, height = self.images[i].size
            short = min(width, height)
            low = min(short, side)
            edge = round(math.exp(math.log(low) + s * (math.log(short) - math.log(low))))
            x0, y0 = int(fx * (width - edge + 1)), int(fy * (height - edge + 1))
            out.append((i, (x0, y0, x0 + edge, y0 + edge), flip < 0.5))
        return out


def group_of(relative: str) -> str:
    """An entry's group: its first folder ('' for a file at the top)."""
    parts = relative.replace("\\", "/").split("/")
    return parts[0] if len(parts) > 1 else ""


def _relative(entry: str, root: Path) -> str:
    try:
        return str(Path(entry).relative_to(root))
    except ValueError:  # a zip member is already relative
        return entry


def _kept_size(size: tuple[int, int]) -> tuple[int, int]:
    short = min(size)
    if short <= KEEP_SIDE:
        return size
    return max(1, round(size[0] * KEEP_SIDE / short)), max(1, round(size[1] * KEEP_SIDE / short))
