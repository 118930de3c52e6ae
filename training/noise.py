"""The noise CEDA and ACET train on: uniform noise and pixel-permuted images, low-pass filtered.

Half of each noise batch is U[0,1] noise, half is training images with their pixels permuted (a
pixel's channels move together, so colour statistics survive while the object does not). Each
image is blurred with a Gaussian of sigma ~ U[1, 2.5] and rescaled to [0, 1]: the blur gives the
noise the low-frequency structure of natural images, which makes it a harder, more useful negative.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


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


def noise_batch(images: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` noise images shaped like ``images`` (float, [0, 1]): half uniform, half permuted, all blurred."""
    if images.ndim != 4:  # 2-D toy data in [0,1]^2: uniform noise over the box [-1, 2]^2 around it
        return 3 * torch.rand(n, *images.shape[1:], device=images.device, generator=generator) - 1
    n_uniform = n // 2
    uniform = torch.rand(n_uniform, *images.shape[1:], device=images.device, generator=generator)
    pick = torch.randint(0, len(images), (n - n_uniform,), device=images.device, generator=generator)
    permuted = permute_pixels(images[pick], generator)
    x = torch.cat([uniform, permuted])
    sigma = 1.0 + 1.5 * torch.rand(n, device=images.device, generator=generator)
    return rescale(gaussian_blur(x, sigma))
