"""Outlier images drawn from nothing: structure natural images have, objects they do not.

  fractal      iterated function systems (the chaos game; PixMix's and "pre-training without natural
               images"' idea): 2-4 random contractive affine maps, points coloured along a random
               two-colour ramp on a dark or light ground. Self-similar detail at every scale.
  dead-leaves  occluding discs of random colour and a power-law radius distribution (Lee, Mumford &
               Huang's model of natural-image statistics): edges, flat regions and scale invariance.
  spectral     Gaussian noise with a 1/f^alpha amplitude spectrum, alpha ~ U[1, 3], colour channels
               partly correlated: clouds, marble and fog, the second-order statistics of photos.

Each function returns float [n, C, H, W] in [0, 1] and draws only from ``generator``.
"""

from __future__ import annotations

import math

import torch

FRACTAL_POINTS = 96  # parallel chaos-game chains per image
FRACTAL_ITERATIONS = 48  # first 8 discarded (burn-in onto the attractor)


def fractal(n: int, shape: tuple[int, int, int], device, generator: torch.Generator | None = None) -> torch.Tensor:
    c, h, w = shape
    maps = torch.randint(2, 5, (n,), device=device, generator=generator)
    # affine maps x -> A x + b, A = rotation x scales (0.3-0.8: contractive) x rotation, b in [-1, 1]
    k = 4
    theta, phi = (torch.rand(n, k, 2, device=device, generator=generator) * 2 * math.pi).unbind(-1)
    scales = 0.3 + 0.5 * torch.rand(n, k, 2, device=device, generator=generator)
    a = _rotation(theta) @ torch.diag_embed(scales) @ _rotation(phi)
    b = torch.rand(n, k, 2, device=device, generator=generator) * 2 - 1
    x = torch.rand(n, FRACTAL_POINTS, 2, device=device, generator=generator) * 2 - 1
    hits = torch.zeros(n, h * w, device=device)
    for t in range(FRACTAL_ITERATIONS):
        choice = (torch.rand(n, FRACTAL_POINTS, device=device, generator=generator) * maps[:, None]).long()
        x = (a[torch.arange(n)[:, None], choice] @ x[..., None]).squeeze(-1) + b[torch.arange(n)[:, None], choice]
        if t >= 8:
            hits.scatter_add_(1, _pixel_index(x, h, w), torch.ones(n, FRACTAL_POINTS, device=device))
    density = (hits / hits.amax(1, keepdim=True).clamp_min(1)).sqrt().view(n, 1, h, w)
    ground, ink_a, ink_b = torch.rand(3, n, c, 1, 1, device=device, generator=generator)
    ground = ground * 0.3 + 0.7 * (torch.rand(n, 1, 1, 1, device=device, generator=generator) < 0.5)
    ramp = torch.linspace(0, 1, w, device=device).view(1, 1, 1, w)
    ink = ink_a + (ink_b - ink_a) * ramp
    return (ground * (1 - density) + ink * density).clamp(0, 1)


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _pixel_index(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Points of an attractor (fitted to the picture: an IFS's fixed set spans about [-2.5, 2.5]) -> flat
    pixel indices; points outside land on the border, where they are few."""
    col = ((x[..., 0] / 5 + 0.5) * w).long().clamp(0, w - 1)
    row = ((x[..., 1] / 5 + 0.5) * h).long().clamp(0, h - 1)
    return row * w + col


DEAD_LEAVES_DISCS = 48


def dead_leaves(n: int, shape: tuple[int, int, int], device, generator: torch.Generator | None = None) -> torch.Tensor:
    c, h, w = shape
    size = max(h, w)
    out = torch.rand(n, c, 1, 1, device=device, generator=generator).expand(n, c, h, w).clone()
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    for _ in range(DEAD_LEAVES_DISCS):  # painted back to front: each disc occludes the ones before it
        centre = torch.rand(n, 2, 1, 1, device=device, generator=generator) * torch.tensor([w, h], device=device).view(
            1, 2, 1, 1
        )
        # p(r) ~ r^-3 between 1 px and half the picture: as many small leaves per area as large ones
        u = torch.rand(n, 1, 1, device=device, generator=generator)
        r_min, r_max = 1.0, size / 2
        radius = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
        inside = (xs - centre[:, 0]) ** 2 + (ys - centre[:, 1]) ** 2 <= radius**2
        colour = torch.rand(n, c, 1, 1, device=device, generator=generator)
        out = torch.where(inside[:, None], colour, out)
    return out


def spectral(n: int, shape: tuple[int, int, int], device, generator: torch.Generator | None = None) -> torch.Tensor:
    c, h, w = shape
    fy = torch.fft.fftfreq(h, device=device).view(h, 1)
    fx = torch.fft.rfftfreq(w, device=device).view(1, w // 2 + 1)
    f = (fx**2 + fy**2).sqrt().clamp_min(1.0 / max(h, w))
    alpha = 1 + 2 * torch.rand(n, 1, 1, 1, device=device, generator=generator)
    shared = torch.randn(n, 1, h, w, device=device, generator=generator)
    own = torch.randn(n, c, h, w, device=device, generator=generator)
    mix = torch.rand(n, 1, 1, 1, device=device, generator=generator)  # 1: gray clouds, 0: independent colours
    white = mix.sqrt() * shared + (1 - mix).sqrt() * own
    x = torch.fft.irfft2(torch.fft.rfft2(white) / f**alpha, s=(h, w))
    flat = x.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-8)).view(n, c, h, w)
