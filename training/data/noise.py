"""The noise CEDA and ACET train on: uniform noise and pixel-permuted images, mostly low-pass filtered.

The default noise batch is half ``blurred-uniform`` (U[0,1] noise), half ``blurred-permuted`` (training
images with their pixels permuted: a pixel's channels move together, so colour statistics survive while the
object does not). Three in four images are blurred with a Gaussian of sigma ~ U[1, 2.5]: the blur gives
the noise the low-frequency structure of natural images, which makes it a harder, more useful negative. The
rest stay sharp, so raw high-frequency noise is trained on too (a CIFAR-10 network fine-tuned on blurred noise alone
accepted every U[0,1] image). Every image is rescaled to span [0, 1]. (The OOD sets ``uniform`` and
``permuted`` of ``training.evaluation.ood_sets`` are the raw, unblurred kinds: other images.)

``strokes`` (opt-in, per model) draws random pen strokes on black: a negative for a data set whose
images are filled shapes (clothing), standing in for line drawings and handwriting. It would be
in-distribution for digits, so it is never a default.

The outlier-exposure families (opt-in; each image kept in [0, 1] as drawn):
  fractal, dead-leaves, spectral  procedural images, no data needed (``training.data.procedural``)
  patch-shuffled                  training images cut into 4-16 px tiles, tiles shuffled: local
                                  statistics of the classes, no object
  blended                         two training images averaged (weight ~ U[0.35, 0.65]): two objects
                                  at once, neither one
and real outlier images (``training.data.outliers``), given to ``noise_batch`` with the share of the
batch they fill.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from . import procedural
from .outliers import OutlierImages

FAMILIES = (
    "blurred-uniform",
    "blurred-permuted",
    "strokes",
    "fractal",
    "dead-leaves",
    "spectral",
    "patch-shuffled",
    "blended",
)
DEFAULT_FAMILIES = ("blurred-uniform", "blurred-permuted")
# Short names of the blurred families, the names the OOD sets of raw noise have too; a stored spec may use them.
SHORT_NAMES = {"uniform": "blurred-uniform", "permuted": "blurred-permuted"}
SHARP_SHARE = 0.25  # of uniform / permuted images left unblurred


def permute_pixels(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle the spatial positions of each image independently; channels of a pixel stay together."""
    n, c, h, w = x.shape
    order = torch.rand(n, h * w, device=x.device, generator=generator).argsort(1)
    flat = x.reshape(n, c, h * w)
    return flat.gather(2, order[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own sigma (separable kernel, reflect padding)."""
    n, c, h, w = x.shape
    radius = min(math.ceil(3 * float(sigma.max())), (min(h, w) - 1) // 2)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)  # [n, 2r+1]
    # grouped conv: one group per (image, channel), each group's kernel is its image's kernel
    kernels = k.repeat_interleave(c, 0)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernels[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def rescale(x: torch.Tensor) -> torch.Tensor:
    """Stretch each image to span [0, 1]."""
    flat = x.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-8)).view_as(x)


def strokes(n: int, shape: tuple[int, ...], device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` images of 1-3 random quadratic Bezier strokes, 1-3.5 px wide, anti-aliased, white on black."""
    c, h, w = shape
    size = min(h, w)
    curves = 3
    ends = torch.rand(n, curves, 3, 2, device=device, generator=generator) * 0.9 + 0.05  # start, control, end
    t = torch.linspace(0, 1, 4 * size, device=device)[:, None]  # points per curve: ~4 per pixel of length
    p0, p1, p2 = ends[:, :, 0, None], ends[:, :, 1, None], ends[:, :, 2, None]
    points = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2) * size  # [n, curves, T, 2]
    used = torch.arange(curves, device=device) < torch.randint(
        1, curves + 1, (n, 1), device=device, generator=generator
    )
    points = torch.where(used[..., None, None], points, torch.full_like(points, -1e4)).flatten(1, 2)
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    grid = torch.stack([xs, ys], -1).reshape(1, h * w, 2).float() + 0.5
    dist = torch.cdist(grid.expand(n, -1, -1), points).min(2).values  # [n, h*w]
    half_width = (0.5 + 1.25 * torch.rand(n, 1, device=device, generator=generator)) * size / 28
    ink = (half_width + 0.5 - dist).clamp(0, 1)
    return ink.view(n, 1, h, w).expand(n, c, h, w).contiguous()


def check_families(names) -> tuple[str, ...]:
    """``names`` as a tuple (short names made full), or ValueError when it is empty or names an unknown family."""
    names = tuple(SHORT_NAMES.get(n, n) for n in names)
    if not names or set(names) - set(FAMILIES):
        raise ValueError(f"noise families must be some of {', '.join(FAMILIES)}, not {', '.join(names) or 'none'}")
    return names


def noise_batch(
    images: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
    families: tuple[str, ...] = DEFAULT_FAMILIES,
    outliers: OutlierImages | None = None,
    outlier_share: float = 0.0,
) -> torch.Tensor:
    """``n`` noise images shaped like ``images`` (float, [0, 1]): ``round(outlier_share x n)`` crops of
    ``outliers`` first, the rest split evenly over ``families``."""
    if images.ndim != 4:  # 2-D toy data in [0,1]^2: uniform noise over the box [-1, 2]^2 around it
        return 3 * torch.rand(n, *images.shape[1:], device=images.device, generator=generator) - 1
    n_real = round(outlier_share * n) if outliers is not None else 0
    shape = tuple(images.shape[1:])
    parts = [outliers.crops(n_real, shape, generator).to(images.device)] if n_real else []
    n -= n_real
    if n == 0:
        return torch.cat(parts) if parts else images[:0].float()
    families = check_families(families)
    counts = dict(
        zip(families, [n // len(families) + (i < n % len(families)) for i in range(len(families))], strict=True)
    )
    # the classic families are rescaled together, as one batch: the noise every trained run and test saw
    classic = [_draw(f, k, images, generator) for f, k in counts.items() if f in CLASSIC]
    if classic:
        parts.append(rescale(torch.cat(classic)))
    parts += [_draw(f, k, images, generator) for f, k in counts.items() if f not in CLASSIC]
    return torch.cat(parts)


CLASSIC = ("blurred-uniform", "blurred-permuted", "strokes")


def _draw(family: str, k: int, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    shape, device = tuple(images.shape[1:]), images.device
    if family == "blurred-uniform":
        return blur_most(torch.rand(k, *shape, device=device, generator=generator), generator)
    if family == "strokes":
        return strokes(k, shape, device, generator)
    if family in ("fractal", "dead-leaves", "spectral"):
        return getattr(procedural, family.replace("-", "_"))(k, shape, device, generator)
    pick = torch.randint(0, len(images), (k,), device=device, generator=generator)
    if family == "blurred-permuted":
        return blur_most(permute_pixels(images[pick], generator), generator)
    if family == "patch-shuffled":
        return shuffle_patches(images[pick], generator)
    other = torch.randint(0, len(images), (k,), device=device, generator=generator)
    weight = 0.35 + 0.3 * torch.rand(k, 1, 1, 1, device=device, generator=generator)
    return weight * images[pick] + (1 - weight) * images[other]  # blended


def shuffle_patches(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cut each image into square tiles (side 4, 8 or 16 px, those that divide the image; one side per call
    and image) and shuffle the tiles of each image independently."""
    n, c, h, w = x.shape
    sides = [p for p in (4, 8, 16) if h % p == 0 and w % p == 0 and (h // p) * (w // p) > 1] or [
        p for p in (2, 7, 14) if h % p == 0 and w % p == 0
    ]
    out = x.clone()
    which = torch.randint(0, len(sides), (n,), device=x.device, generator=generator)
    for i, p in enumerate(sides):
        idx = (which == i).nonzero().flatten()
        if len(idx) == 0:
            continue
        gh, gw = h // p, w // p
        tiles = x[idx].reshape(len(idx), c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(len(idx), gh * gw, -1)
        order = torch.rand(len(idx), gh * gw, device=x.device, generator=generator).argsort(1)
        tiles = tiles.gather(1, order[..., None].expand_as(tiles))
        out[idx] = tiles.reshape(len(idx), gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(len(idx), c, h, w)
    return out


def blur_most(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Blur all but a ``SHARP_SHARE`` of the images, each with sigma ~ U[1, 2.5]."""
    n = len(x)
    sigma = 1.0 + 1.5 * torch.rand(n, device=x.device, generator=generator)
    sharp = torch.rand(n, device=x.device, generator=generator) < SHARP_SHARE
    return torch.where(sharp[:, None, None, None], x, gaussian_blur(x, sigma)) if n else x
