"""CEDA and ACET (Hein, Andriushchenko & Bitterwolf, CVPR 2019): low confidence far from the data.

Every batch is joined by ``at_frac x batch`` noise images (``training.noise``). CEDA trains the
model to be unconfident on them; ACET first moves each noise image, by projected gradient ascent
in an L-inf ball of radius eps, to where the model is *most* confident, and trains on that. With
``pgd_steps = 0`` this is CEDA; with ``at_frac = 0`` it is the wrapped method alone.

The loss is (sum of clean losses + sum of noise losses) / (n_clean + n_noise). The noise loss is
the log of the max softmax probability (``max_conf``, as in the paper) or cross-entropy to the
uniform label (``uniform``).

PGD step size: eps / steps x ``step_factor`` (default 2.5). A factor of 1 could only just reach the
ball's boundary if every step pointed the same way; with sign steps that oscillate, 2.5 (the
Madry et al. choice) lets the iterate cross the ball within ~40 % of the budget and spend the rest
moving along it, while staying small enough not to skip over narrow confident regions.

ACET wraps another method (plain or IsoMax+): that method's head, clean loss and score are kept.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks import max_log_confidence, pgd
from ..noise import noise_batch
from .plain import Plain


class ACET:
    def __init__(self, base: Plain | None = None, *, at_frac: float = 1.0, pgd_steps: int = 40, eps: float = 0.3,
                 step_factor: float = 2.5, noise_loss: str = "max_conf"):
        if noise_loss not in ("max_conf", "uniform"):
            raise ValueError(f"noise_loss must be 'max_conf' or 'uniform', not {noise_loss!r}")
        self.base = base or Plain()
        self.at_frac, self.pgd_steps, self.eps = at_frac, pgd_steps, eps
        self.step_factor, self.noise_loss = step_factor, noise_loss
        self.generator: torch.Generator | None = None

    @property
    def name(self) -> str:
        if self.at_frac == 0:
            return self.base.name
        kind = "acet" if self.pgd_steps > 0 else "ceda"
        return kind if self.base.name == "plain" else f"{self.base.name}+{kind}"

    @property
    def score(self) -> str:
        return self.base.score

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return self.base.make_head(in_features, num_classes)

    def noise_term(self, logits: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits.float(), 1)
        if self.noise_loss == "max_conf":
            return log_p.max(1).values.sum()
        return -log_p.mean(1).sum()

    def loss(self, model: nn.Module, net: nn.Module, x: torch.Tensor, y: torch.Tensor):
        n_noise = round(self.at_frac * len(x))
        if n_noise == 0:
            return self.base.loss(model, net, x, y)
        noise = noise_batch(x, n_noise, self.generator)
        if self.pgd_steps > 0:
            noise = pgd(model, noise, max_log_confidence, eps=self.eps, steps=self.pgd_steps,
                        step_size=self.eps / self.pgd_steps * self.step_factor, generator=self.generator,
                        clip=(0.0, 1.0) if x.ndim == 4 else None)  # images live in [0,1]; toy points don't
        logits = net(torch.cat([x, noise]))
        clean, on_noise = logits[: len(x)], logits[len(x):]
        loss = (self.base.clean_loss(clean, y) + self.noise_term(on_noise)) / (len(x) + n_noise)
        with torch.no_grad():
            stats = {
                "loss": loss.detach(),
                "acc": (clean.argmax(1) == y).float().mean(),
                "noise_mmc": torch.softmax(on_noise.float(), 1).max(1).values.mean(),
            }
        return loss, stats

    def outputs(self, model: nn.Module, x: torch.Tensor):
        return self.base.outputs(model, x)

    def state(self) -> dict:
        return {"name": "acet", "base": self.base.state(), "at_frac": self.at_frac, "pgd_steps": self.pgd_steps,
                "eps": self.eps, "step_factor": self.step_factor, "noise_loss": self.noise_loss}
