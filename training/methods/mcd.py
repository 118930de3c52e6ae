"""MCD, Maximum Classifier Discrepancy (Yu & Aizawa, ICCV 2019): two heads that agree on the data, not off it.

One feature extractor E and two linear classifier heads F1, F2. Training has two phases, each a run
of the shared loop (``python -m training.mcd`` runs both):

- ``pretrain``: cross-entropy on both heads, labelled in-distribution data, everything trained.
- ``finetune``: two optimiser steps per mini-batch (the loop runs ``updates`` in order):
  step A, cross-entropy on both heads; F2 sees detached features, so only F1's loss trains E.
  step B, E fixed: cross-entropy on both heads plus the discrepancy loss on an unlabelled batch,
  ``max(0, m - (mean_i H(F1(x_i)) - mean_i H(F2(x_i))))``, H the entropy of one sample's softmax over
  the classes (per sample, then averaged over the batch), margin m = 1.2. F1 learns to be unsure
  where F2 is sure, off the labelled data.

The paper's three SGD optimisers (E, F1, F2; same lr and momentum) are the loop's one SGD optimiser:
its state is per parameter and a parameter without a gradient (``zero_grad(set_to_none=True)``) is
not touched, so step B, which leaves E without gradients, updates F1 and F2 only, exactly as
stepping two of three separate optimisers would.

The OOD score is the L1 distance between the heads' softmax outputs (0..2), computed in the graph.
Predictions (``probabilities``, ``logits`` and the argmax) are F1's: F1 is the head the extractor is
trained for (F2's loss never reaches E in fine-tuning), and F1 is the head taught to be *unsure* off
the data, so its probabilities stay honest on OOD inputs; F2 is taught the opposite (confident off
the data), and averaging it in would make confidence on OOD inputs worse.

The unlabelled data (``unlabeled``): ``noise`` (``training.noise``: blurred uniform and pixel-permuted
training images, the default), or any ``--dataset`` name / ``imagefolder:PATH``, whose *training*
images (labels ignored) are converted to the in-distribution channels and size. The paper used the
transductive setting, the unlabelled test-time mixture of in- and out-of-distribution images; this
implementation does not (see docs/mcd.md).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..noise import noise_batch
from .plain import Plain


class TwoHeads(nn.Module):
    """F1 and F2 on the same features. ``forward(f)`` is F1's logits (the prediction).

    ``forward(f, detach=(d1, d2))`` is both heads' logits stacked ``[2, N, K]``, head i on detached
    features where ``d_i``: the training steps pass this through the (possibly DDP-wrapped) model.
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.f1 = nn.Linear(in_features, num_classes)
        self.f2 = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor, detach: tuple[bool, bool] | None = None) -> torch.Tensor:
        if detach is None:
            return self.f1(features)
        frozen = features.detach()
        return torch.stack([self.f1(frozen if detach[0] else features), self.f2(frozen if detach[1] else features)])


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each row's softmax, over the classes: [N, K] -> [N]."""
    log_p = torch.log_softmax(logits.float(), 1)
    return -(log_p.exp() * log_p).sum(1)


def discrepancy_loss(logits1: torch.Tensor, logits2: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, m - (mean entropy of F1 - mean entropy of F2)) on an unlabelled batch."""
    return F.relu(margin - (entropy(logits1).mean() - entropy(logits2).mean()))


def unlabeled_images(name: str, data_root: str, like: tuple[int, int, int], *, download: bool = False) -> torch.Tensor:
    """A data set's training images (labels ignored) as uint8 [N, C, H, W] with ``like`` = (C, H, W)."""
    from .. import data as datasets

    split = datasets.load(name, data_root, val_fraction=0.0, download=download).train
    if split.x.ndim != 4:
        raise ValueError(f"--unlabeled {name!r} is not an image data set")
    x = datasets.as_float(split.x)
    channels, height, width = like
    if x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != channels:
        raise ValueError(f"--unlabeled {name!r} has {x.shape[1]} channels; the model takes {channels}")
    if x.shape[2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class MCD(Plain):
    name = "mcd"
    score = "L1 distance between the two heads' softmax outputs"

    def __init__(self, phase: str = "finetune", unlabeled: str = "noise", margin: float = 1.2,
                 data_root: str = "data"):
        if phase not in ("pretrain", "finetune"):
            raise ValueError(f"phase must be 'pretrain' or 'finetune', not {phase!r}")
        self.phase, self.unlabeled, self.margin, self.data_root = phase, unlabeled, margin, data_root
        self.generator: torch.Generator | None = None
        self._pool: torch.Tensor | None = None  # the unlabelled images, loaded on first use

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return TwoHeads(in_features, num_classes)

    # -- what the loop runs: one optimiser step per entry of ``updates``, in order, on each batch --

    @property
    def updates(self):
        return (self.loss,) if self.phase == "pretrain" else (self.step_a, self.step_b)

    @property
    def find_unused_parameters(self) -> bool:
        """Step B gives the extractor no gradient; DDP must be told (it then leaves those grads None)."""
        return self.phase == "finetune"

    def _both_ce(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.cross_entropy(logits[0].float(), y), F.cross_entropy(logits[1].float(), y)

    def loss(self, model: nn.Module, net: nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Pre-training: cross-entropy on both heads, everything trained."""
        logits = net(x, detach=(False, False))
        ce1, ce2 = self._both_ce(logits, y)
        loss = ce1 + ce2
        return loss, {"loss": loss.detach(), **self._accuracies(logits, y)}

    def step_a(self, model: nn.Module, net: nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Cross-entropy on both heads; F2 on detached features, so only F1's loss updates the extractor."""
        logits = net(x, detach=(False, True))
        ce1, ce2 = self._both_ce(logits, y)
        loss = ce1 + ce2
        return loss, {"ce_a": loss.detach(), **self._accuracies(logits, y)}

    def step_b(self, model: nn.Module, net: nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Extractor fixed: cross-entropy on both heads plus the discrepancy loss on an unlabelled batch."""
        unlabeled = self.unlabeled_batch(x)
        model.backbone.eval()  # fixed means fixed: no batch-norm statistics from this batch either
        try:
            logits = net(torch.cat([x, unlabeled]), detach=(True, True))
        finally:
            model.backbone.train()
        ce1, ce2 = self._both_ce(logits[:, : len(x)], y)
        on_unlabeled = logits[:, len(x):]
        disc = discrepancy_loss(on_unlabeled[0], on_unlabeled[1], self.margin)
        loss = ce1 + ce2 + disc
        with torch.no_grad():
            p = torch.softmax(on_unlabeled.float(), 2)
            stats = {
                "ce_b": (ce1 + ce2).detach(),
                "disc": disc.detach(),
                "entropy_gap": entropy(on_unlabeled[0]).mean() - entropy(on_unlabeled[1]).mean(),
                "unlabeled_l1": (p[0] - p[1]).abs().sum(1).mean(),
            }
        return loss, stats

    @staticmethod
    def _accuracies(logits: torch.Tensor, y: torch.Tensor) -> dict:
        with torch.no_grad():
            hits = logits.argmax(2) == y
            return {"acc": hits[0].float().mean(), "acc_f2": hits[1].float().mean()}

    def unlabeled_batch(self, x: torch.Tensor) -> torch.Tensor:
        """As many unlabelled images as labelled ones, on x's device, float in [0, 1]."""
        if self.unlabeled == "noise":
            return noise_batch(x, len(x), self.generator)
        if self._pool is None:
            self._pool = unlabeled_images(self.unlabeled, self.data_root, tuple(x.shape[1:])).to(x.device)
        idx = torch.randint(0, len(self._pool), (len(x),), device=x.device, generator=self.generator)
        return self._pool[idx].float().div_(255.0)

    # -- inference: what the exported graph computes --

    def outputs(self, model: nn.Module, x: torch.Tensor):
        features = model.features(x)
        logits1, logits2 = model.head.f1(features), model.head.f2(features)
        p1, p2 = torch.softmax(logits1.float(), 1), torch.softmax(logits2.float(), 1)
        return p1, (p1 - p2).abs().sum(1), logits1

    def state(self) -> dict:
        return {"name": self.name, "phase": self.phase, "unlabeled": self.unlabeled, "margin": self.margin,
                "data_root": self.data_root}
