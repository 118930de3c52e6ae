"""Adversarial noise against a post-hoc file: noise moved by PGD to where the file's score is lowest.

The attack runs through the file's own graph: the extractor (preprocessing, classifier, pretrained branches) by
torch node by node (``training.evaluation.onnx_torch``), then the same score modules the head was exported from.
A Fisher combination is a step function of its p-values (a count of table entries), with no gradient; the attack
therefore descends the sum of the components' standardised scores, which every p-value falls with. The moved
images are then scored by the written file in onnxruntime, like every other evaluation row.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from ..evaluation import ood_sets
from ..evaluation.onnx_torch import OnnxModule
from ..methods.attacks import pgd
from . import parts

ADV_SET = "adv-noise"
STARTS, STEPS, EPS, STEP_FACTOR = 200, 100, 0.3, 2.5  # uniform and permuted noise, L-inf 0.3 (the ACET budget)


class Surrogate(nn.Module):
    """images -> minus the sum of the components' standardised scores (PGD maximises it)."""

    def __init__(self, extractor: onnx.ModelProto, names: list[str], components: list[parts.Component], scale):
        super().__init__()
        self.graph, self.names = OnnxModule(extractor), names
        self.head = parts.Head(components)  # its component scores, not its (gradient-free) combination
        self.scale = scale  # per component: (mean, std) of its in-distribution scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.names, self.graph(images=x), strict=True))
        scores = self.head.component_scores(given[parts.LOGITS], tuple(given[n] for n in self.head.inputs))
        return -sum((s - mean) / std for s, (mean, std) in zip(scores, self.scale, strict=True))


def adversarial_noise(surrogate: Surrogate, id_images: torch.Tensor, shape, seed: int) -> torch.Tensor:
    """``STARTS`` noise images (half uniform, half pixel-permuted in-distribution images) moved by ``STEPS`` PGD
    steps within an L-inf ball of ``EPS``."""
    half = STARTS // 2
    starts = torch.cat(
        [
            ood_sets.noise_set("uniform", shape, id_images, half, seed),
            ood_sets.noise_set("permuted", shape, id_images, STARTS - half, seed),
        ]
    )
    g = torch.Generator().manual_seed(ood_sets.set_seed(ADV_SET, seed))
    out = []
    for i in range(0, len(starts), 50):
        out.append(
            pgd(
                surrogate,
                starts[i : i + 50],
                lambda v: v,
                eps=EPS,
                steps=STEPS,
                step_size=EPS / STEPS * STEP_FACTOR,
                generator=g,
            )
        )
    return torch.cat(out)


def scale_of(scores: list[np.ndarray]) -> list[tuple[float, float]]:
    return [(float(s.mean()), float(s.std()) or 1.0) for s in scores]
