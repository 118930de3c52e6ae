"""Plain training: cross-entropy; the OOD score is 1 - max softmax probability (Hendrycks & Gimpel).

Also the base of the softmax-classifier methods (IsoMax+, MCD, and what ACET wraps): ``clean_loss``,
``probabilities`` and ``ood_score`` are the pieces they replace.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .api import Cli, LossAndStats, Method, register, register_cli


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each row's softmax, over the classes: [N, K] -> [N] (IsoMax+'s score, MCD's discrepancy)."""
    log_p = torch.log_softmax(logits.float(), 1)
    return -(log_p.exp() * log_p).sum(1)


@register
class Plain(Method):
    name = "plain"
    score = "1 - max softmax probability"
    labels = ("plain",)

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return nn.Linear(in_features, num_classes)

    def clean_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed (not averaged) over the batch, so methods that add terms can normalise once."""
        return F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=self.label_smoothing)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LossAndStats:
        logits = model(x)
        loss = self.clean_loss(logits, y) / len(y)
        return loss, {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, 1)

    def ood_score(self, logits: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        return 1.0 - probabilities.max(1).values

    def outputs(self, model: nn.Module, x: torch.Tensor):
        logits = model(x)
        p = self.probabilities(logits)
        return p, self.ood_score(logits, p), logits


@register_cli
class PlainCli(Cli):
    name = "plain"
    description = "Train a classifier with plain cross-entropy."
    variants = ()  # trained as ``training.acet --at-frac 0`` (the ACET variant "plain")
