"""IsoMax+ (Macedo & Ludermir, 2021): isotropic distance-based logits, no extra cost at inference.

The head holds one learnable prototype per class and a learnable distance scale |s|; the distance
logits are -|s| * ||f/|f| - p/|p|||. Training multiplies them by the entropic scale (10) inside the
cross-entropy.

Prototypes start at unit norm. The logits see only p/|p|, so an SGD step turns a prototype by about
lr * grad / |p|^2: the reference's N(0, 1) start in LeNet's 1024-d feature space (|p| ~ 32) turns it
by ~1e-5 rad a step: a LeNet trained from it ends with its prototypes at their random start
(cos(initial, final) >= 0.9999). At |p| = 1 they move ~1000x faster and learn.

What the exported graph returns:

- ``logits``: the distance logits times the entropic scale, and ``probabilities`` their softmax: the
  distribution the loss trained, so a user can read the max probability as confidence (the unscaled
  softmax of a well-classified image is ~0.2 for 10 classes, whatever the model's certainty).
- ``ood_score``: chosen per model at export (``training.export --score``), stored in the metadata's
  ``score``:

  ``min-distance``  the paper's: the minimum scaled distance to a prototype. It normalises the
                    features and so discards their norm.
  ``entropy``       the entropy of the softmax of the *unscaled* distance logits (the paper's
                    alternative score; flat over the classes = far from all of them).
  ``projection``    minus the largest projection of the (unnormalised) features on a unit prototype,
                    |f| cos(f, p): keeps the feature norm, which separates noise (small |f|) from data.

``python -m training.isomax --acet`` trains IsoMax+ inside ACET (``training.methods.acet``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from . import acet
from .api import Cli, register, register_cli, spec
from .plain import Plain, entropy

SCORES = {
    "min-distance": "minimum scaled distance to a class prototype (of the normalised features)",
    "entropy": "entropy of the softmax of the unscaled prototype-distance logits",
    "projection": "minus the largest projection of the features on a unit-norm class prototype",
}


class IsoMaxPlusHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.prototypes = nn.Parameter(F.normalize(torch.randn(num_classes, in_features), dim=1))
        self.distance_scale = nn.Parameter(torch.ones(1))

    def unit_prototypes(self) -> torch.Tensor:
        return F.normalize(self.prototypes.float(), dim=1)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        f = F.normalize(features.float(), dim=1)
        # ||a - b||^2 = 2 - 2 a.b for unit vectors; the clamp keeps sqrt's gradient finite at 0.
        # (torch.cdist would do, but this form exports to plain ONNX MatMul/Sqrt.)
        return torch.sqrt((2.0 - 2.0 * f @ self.unit_prototypes().t()).clamp_min(1e-12))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return -self.distance_scale.abs() * self.distances(features)


@dataclass
class IsoMaxConfig:
    entropic_scale: float = 10.0
    score: str = "min-distance"  # one of SCORES: what the exported ``ood_score`` is (export's --score sets it)


@register
class IsoMaxPlus(Plain):
    name = "isomax+"
    Config = IsoMaxConfig
    score_options = tuple(SCORES)
    labels = ("isomax+",)

    def __init__(self, config: IsoMaxConfig | None = None):
        super().__init__(config)
        if self.config.score not in SCORES:
            raise ValueError(f"IsoMax+ score must be one of {', '.join(SCORES)}, not {self.config.score!r}")

    @property
    def score(self) -> str:
        return SCORES[self.config.score]

    def with_score(self, name: str) -> IsoMaxPlus:
        return IsoMaxPlus(replace(self.config, score=name))

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return IsoMaxPlusHead(in_features, num_classes)

    def clean_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            self.config.entropic_scale * logits.float(), y, reduction="sum", label_smoothing=self.label_smoothing
        )

    def outputs(self, model: nn.Module, x: torch.Tensor):
        features = model.features(x)
        distance_logits = model.head(features)
        logits = self.config.entropic_scale * distance_logits.float()
        return torch.softmax(logits, 1), self.ood_score_of(features, distance_logits, model.head), logits

    def ood_score_of(self, features: torch.Tensor, distance_logits: torch.Tensor, head: IsoMaxPlusHead) -> torch.Tensor:
        if self.config.score == "entropy":
            return entropy(distance_logits)
        if self.config.score == "projection":
            return -(features.float() @ head.unit_prototypes().t()).max(1).values
        return -distance_logits.float().max(1).values


@register_cli
class IsoMaxPlusCli(Cli):
    name = "isomax+"
    description = "Train a classifier with the IsoMax+ loss (optionally plus ACET noise training)."
    variants = (("IsoMax+", ("--score", "auto")), ("IsoMax+ACET", ("--acet", "--score", "auto")))

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--entropic-scale",
            type=float,
            default=IsoMaxConfig.entropic_scale,
            help="IsoMax+ entropic scale in the loss (and in the served probabilities)",
        )
        parser.add_argument("--acet", action="store_true", help="add the ACET noise term (see the noise flags)")
        acet.add_noise_options(parser)

    @classmethod
    def spec_from_args(cls, args: argparse.Namespace) -> dict:
        own = spec(cls.name, entropic_scale=args.entropic_scale)
        return acet.wrap(own, args) if args.acet else own
