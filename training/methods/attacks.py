"""Projected gradient ascent in an L-inf ball, the attack ACET trains against and evaluation uses.

The attack runs on the bare module (not the DDP wrapper) with BatchNorm in eval mode, and keeps the
best iterate per sample: PGD's last step is not its best, and training against a weaker point than
the attack found would overstate robustness.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def pgd(
    model: nn.Module,
    x0: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    *,
    eps: float,
    steps: int,
    step_size: float,
    random_start: bool = True,
    clip: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximise ``objective(model(x))`` (one value per sample) over ||x - x0||_inf <= eps, x in ``clip``.

    Returns a detached batch: no gradient flows through the attack into the training step.
    """
    if steps <= 0:
        return x0.detach()
    # Every module's own mode, not the top one's: a wrapper built for the attack is in training mode while the
    # network it wraps is in eval mode, and restoring the wrapper's flag would switch the network's BatchNorm
    # to batch statistics for everything scored after the attack.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    x0 = x0.detach()
    lo, hi = x0 - eps, x0 + eps
    if clip is not None:
        lo, hi = lo.clamp(*clip), hi.clamp(*clip)
    if random_start:
        x = x0 + (2 * torch.rand(x0.shape, device=x0.device, generator=generator) - 1) * eps
        x = torch.max(torch.min(x, hi), lo)
    else:
        x = x0.clone()
    best = x.clone()
    best_val = torch.full((len(x0),), -torch.inf, device=x0.device)
    try:
        for _ in range(steps + 1):
            x.requires_grad_(True)
            with torch.enable_grad():
                val = objective(model(x))
                (grad,) = torch.autograd.grad(val.sum(), x)
            with torch.no_grad():
                improved = val.detach() > best_val
                best_val = torch.where(improved, val.detach(), best_val)
                best[improved] = x.detach()[improved]
                x = torch.max(torch.min(x.detach() + step_size * grad.sign(), hi), lo)
    finally:
        for m, mode in modes:
            m.training = mode
    return best.detach()


def max_log_confidence(logits: torch.Tensor) -> torch.Tensor:
    """log of the max softmax probability, per sample: what an attack on noise pushes up."""
    return torch.log_softmax(logits.float(), 1).max(1).values
