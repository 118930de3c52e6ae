"""MCD, Maximum Classifier Discrepancy (Yu & Aizawa, ICCV 2019): two heads that agree on the data, not off it.

One feature extractor E and two linear classifier heads F1, F2. Training has two phases, each a run
of the shared loop (``python -m training.mcd`` runs both, see ``MCDCli.runs``):

- ``pretrain``: cross-entropy on both heads, labelled in-distribution data, everything trained.
- ``finetune``: two optimiser steps per mini-batch (the loop runs ``updates`` in order):
  step A, cross-entropy on both heads, E, F1 and F2 trained together (as in the paper).
  step B, E fixed: cross-entropy on both heads plus the discrepancy loss on an unlabelled batch,
  ``max(0, m - (mean_i H(F1(x_i)) - mean_i H(F2(x_i))))``, H the entropy of one sample's softmax over
  the classes (per sample, then averaged over the batch), margin m = 1.2. F1 learns to be unsure
  where F2 is sure, off the labelled data.

The paper's three SGD optimisers (E, F1, F2; same lr and momentum) are the loop's one SGD optimiser:
its state is per parameter and a parameter without a gradient (``zero_grad(set_to_none=True)``) is
not touched, so step B, which leaves E without gradients, updates F1 and F2 only, exactly as
stepping two of three separate optimisers would.

The OOD score is the L1 distance between the heads' softmax outputs (0..2), computed in the graph.
Predictions (``probabilities``, ``logits`` and the argmax) are F1's: F1 is the head taught to be
*unsure* off the data, so its probabilities stay honest on OOD inputs; F2 is taught the opposite
(confident off the data), and averaging it in would make confidence on OOD inputs worse.

The unlabelled data (``unlabeled``): ``noise`` (``training.data.noise``: blurred uniform and pixel-permuted
training images, the default), or any ``--dataset`` name / ``imagefolder:PATH``, whose *training*
images (labels ignored) are converted to the in-distribution channels and size. The paper used the
transductive setting, the unlabelled test-time mixture of in- and out-of-distribution images; this
implementation does not (see docs/mcd.md).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..config import TrainConfig
from ..data import datasets
from ..data.noise import noise_batch
from ..ranks import is_main
from .api import Cli, LossAndStats, register, register_cli, spec
from .plain import Plain, entropy


class TwoHeads(nn.Module):
    """F1 and F2 on the same features. ``forward(f)`` is F1's logits (the prediction).

    ``forward(f, detach=(d1, d2))`` is both heads' logits stacked ``[2, N, K]``, head i on detached
    features where ``d_i``: the training steps call the model this way.
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


def discrepancy_loss(logits1: torch.Tensor, logits2: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, m - (mean entropy of F1 - mean entropy of F2)) on an unlabelled batch."""
    return F.relu(margin - (entropy(logits1).mean() - entropy(logits2).mean()))


def unlabeled_images(name: str, data_root: str, like: tuple[int, int, int], *, download: bool = False) -> torch.Tensor:
    """A data set's training images (labels ignored) as uint8 [N, C, H, W] with ``like`` = (C, H, W)."""
    split = datasets.load(name, data_root, val_fraction=0.0, download=download).train
    if split.x.ndim != 4:
        raise ValueError(f"--unlabeled {name!r} is not an image data set")
    if split.x.shape[1] not in (1, 3):
        raise ValueError(f"--unlabeled {name!r} has {split.x.shape[1]} channels; the model takes {like[0]}")
    return (datasets.to_shape(split.x, *like) * 255).round().to(torch.uint8)


@dataclass
class MCDConfig:
    phase: str = "finetune"  # "pretrain" | "finetune"
    unlabeled: str = "noise"  # "noise", or a --dataset name / imagefolder:PATH whose training images are used
    margin: float = 1.2
    data_root: str = "data"


@register
class MCD(Plain):
    name = "mcd"
    Config = MCDConfig
    score = "L1 distance between the two heads' softmax outputs"
    labels = ("mcd",)

    def __init__(self, config: MCDConfig | None = None):
        super().__init__(config)
        if self.config.phase not in ("pretrain", "finetune"):
            raise ValueError(f"phase must be 'pretrain' or 'finetune', not {self.config.phase!r}")
        self._pool: torch.Tensor | None = None  # the unlabelled images, loaded on first use

    def make_head(self, in_features: int, num_classes: int) -> nn.Module:
        return TwoHeads(in_features, num_classes)

    @property
    def negatives(self) -> tuple[str, ...]:
        if self.config.phase == "pretrain":
            return ()
        source = self.config.unlabeled
        if source == "noise":
            return ("blurred uniform and pixel-permuted noise, unlabelled (the two heads taught to disagree on it)",)
        shown = Path(source.removeprefix("imagefolder:")).name  # a folder's name, never its path
        return (f"the training images of {shown}, unlabelled (the two heads taught to disagree on them)",)

    # -- what the loop runs: one optimiser step per entry of ``updates``, in order, on each batch --

    @property
    def updates(self):
        return (self.loss,) if self.config.phase == "pretrain" else (self.step_a, self.step_b)

    def _both_ce(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ls = self.label_smoothing
        return (
            F.cross_entropy(logits[0].float(), y, label_smoothing=ls),
            F.cross_entropy(logits[1].float(), y, label_smoothing=ls),
        )

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LossAndStats:
        """Pre-training: cross-entropy on both heads, everything trained."""
        logits = model(x, detach=(False, False))
        ce1, ce2 = self._both_ce(logits, y)
        loss = ce1 + ce2
        return loss, {"loss": loss.detach(), **self._accuracies(logits, y)}

    def step_a(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LossAndStats:
        """Cross-entropy on both heads; E, F1 and F2 trained together (both heads' losses reach E)."""
        logits = model(x, detach=(False, False))
        ce1, ce2 = self._both_ce(logits, y)
        loss = ce1 + ce2
        return loss, {"ce_a": loss.detach(), **self._accuracies(logits, y)}

    def step_b(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LossAndStats:
        """Extractor fixed: cross-entropy on both heads plus the discrepancy loss on an unlabelled batch."""
        unlabeled = self.unlabeled_batch(x)
        model.backbone.eval()  # fixed means fixed: no batch-norm statistics from this batch either
        try:
            logits = model(torch.cat([x, unlabeled]), detach=(True, True))
        finally:
            model.backbone.train()
        ce1, ce2 = self._both_ce(logits[:, : len(x)], y)
        on_unlabeled = logits[:, len(x) :]
        disc = discrepancy_loss(on_unlabeled[0], on_unlabeled[1], self.config.margin)
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
        c = self.config
        if c.unlabeled == "noise":
            return noise_batch(x, len(x), self.generator)
        if self._pool is None:
            self._pool = unlabeled_images(c.unlabeled, c.data_root, tuple(x.shape[1:])).to(x.device)
        idx = torch.randint(0, len(self._pool), (len(x),), device=x.device, generator=self.generator)
        return self._pool[idx].float().div_(255.0)

    # -- inference: what the exported graph computes --

    def outputs(self, model: nn.Module, x: torch.Tensor):
        features = model.features(x)
        logits1, logits2 = model.head.f1(features), model.head.f2(features)
        p1, p2 = torch.softmax(logits1.float(), 1), torch.softmax(logits2.float(), 1)
        return p1, (p1 - p2).abs().sum(1), logits1


@register_cli
class MCDCli(Cli):
    """Two runs of the shared loop: pre-training, then fine-tuning."""

    name = "mcd"
    description = "Train a two-head classifier with MCD (Maximum Classifier Discrepancy, Yu & Aizawa 2019)."
    variants = (("MCD", ()),)

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        d = MCDConfig()
        g = parser.add_argument_group("MCD")
        g.add_argument(
            "--unlabeled",
            default=d.unlabeled,
            help="unlabelled data for the discrepancy loss: 'noise' (blurred uniform + pixel-permuted "
            "training images), a --dataset name or imagefolder:PATH (its training images, labels "
            "ignored). Never an OOD set you evaluate on",
        )
        g.add_argument("--margin", type=float, default=d.margin, help="discrepancy margin m")
        g.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning epochs (steps A and B per batch)")
        g.add_argument("--finetune-max-steps", type=int, default=None, help="stop fine-tuning after this many batches")
        g.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tuning SGD learning rate (constant)")

    @classmethod
    def spec_from_args(cls, args: argparse.Namespace) -> dict:
        return spec(cls.name, unlabeled=args.unlabeled, margin=args.margin, data_root=args.data_root)

    @classmethod
    def runs(cls, cfg: TrainConfig, args: argparse.Namespace) -> list[TrainConfig]:
        """Pre-training into OUT/pretrain, then fine-tuning into OUT (exported). ``--init-from`` skips
        pre-training; ``--resume`` after pre-training finished goes straight on with fine-tuning."""
        out = Path(cfg.out)
        if args.unlabeled != "noise" and is_main():
            # fail (or download) now, not after pre-training; other ranks read it once rank 0 has it
            datasets.load(args.unlabeled, args.data_root, val_fraction=0.0, download=args.download)
        pretrain = replace(
            cfg, method={**cfg.method, "phase": "pretrain"}, out=str(out / "pretrain"), export=None, init_from=None
        )
        finetune = replace(
            cfg,
            method={**cfg.method, "phase": "finetune"},
            epochs=args.finetune_epochs,
            max_steps=args.finetune_max_steps,
            lr=args.finetune_lr,
            lr_milestones=(),
            init_from=args.init_from or str(out / "pretrain" / "last.pt"),
        )
        if args.init_from or (args.resume and (out / "last.pt").exists()):
            return [finetune]
        return [pretrain, finetune]
