"""IsoMax+ (Macedo & Ludermir, 2021): isotropic distance-based logits, no extra cost at inference.

The head holds one learnable prototype per class and a learnable distance scale |s|; logits are
-|s| * ||f/|f| - p/|p|||. Training multiplies the logits by the entropic scale (10) inside the
cross-entropy only; probabilities at inference use the unscaled logits. The OOD score is the
minimum (scaled) distance to any prototype: far from every class = out of distribution.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .plain import Plain


class IsoMaxPlusHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_classes, in_features))
        self.distance_scale = nn.Parameter(torch.ones(1))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        f = F.normalize(features.float(), dim=1)
        p = F.normalize(self.prototypes.float(), dim=1)
        # ||a - b||^2 = 2 - 2 a.b for unit vectors; the clamp keeps sqrt's gradient finite at 0.
        # (torch.cdist would do, but this form exports to plain ONNX MatMul/Sqrt.)
        return torch.sqrt((2.0 - 2.0 * f @ p.t()).clamp_min(1e-12))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return -self.distance_scale.abs() * self.distances(features)


class IsoMaxPlus(Plain):
    name = "isomax+"
    score = "minimum scaled distance to a class prototype"

    def __init__(self, entropic_scale: float = 10.0):
        self.entropic_scale = entropic_scale

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return IsoMaxPlusHead(in_features, num_classes)

    def clean_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.entropic_scale * logits.float(), y, reduction="sum")

    def ood_score(self, logits: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        return -logits.max(1).values

    def state(self) -> dict:
        return {"name": self.name, "entropic_scale": self.entropic_scale}
