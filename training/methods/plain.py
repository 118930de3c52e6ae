"""Plain training: cross-entropy; the OOD score is 1 - max softmax probability (Hendrycks & Gimpel).

This module also defines the interface every method follows (pytorch-ood's detector shape: one
small class, higher score = more OOD):

    make_head(in_features, num_classes) -> nn.Module   the classifier head the model is built with
    loss(model, net, x, y) -> (loss, stats)             one training batch; ``net`` may be DDP-wrapped
    outputs(model, x) -> (probabilities, ood_score, logits)   what the exported graph returns
    state() -> dict                                     plain data that rebuilds the method
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Plain:
    name = "plain"
    score = "1 - max softmax probability"
    generator: torch.Generator | None = None  # set by the trainer; used by methods that sample noise

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return nn.Linear(in_features, num_classes)

    def clean_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed (not averaged) over the batch, so methods that add terms can normalise once."""
        return F.cross_entropy(logits.float(), y, reduction="sum")

    def loss(self, model: nn.Module, net: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = net(x)
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

    def state(self) -> dict:
        return {"name": self.name}
