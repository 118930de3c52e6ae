"""The two graphs this command adds around a classifier, written in torch and exported by ``torch.onnx``: the
classifier's own input convention in front, and the head that turns logits and features into the contract's
three outputs behind."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from modelfile import ClassifierInput

from .scores import Score

LOGITS = "logits"  # the source name of scores that read the classifier's logits only


class Preprocess(nn.Module):
    """The contract's [0, 1] RGB (or gray) pixels -> what the classifier was trained on: 0-255 where it says so,
    BGR where it says so, then (x - mean) / std."""

    def __init__(self, spec: ClassifierInput):
        super().__init__()
        scale = 255.0 if spec.pixel_range == "0-255" else 1.0
        self.bgr = spec.channel_order == "BGR"
        self.mean = nn.Buffer(torch.tensor(spec.mean).view(1, -1, 1, 1))
        self.factor = nn.Buffer(scale / torch.tensor(spec.std).view(1, -1, 1, 1))
        self.offset = nn.Buffer(torch.tensor(spec.mean).view(1, -1, 1, 1) / torch.tensor(spec.std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flip(1) if self.bgr else images
        return x * self.factor - self.offset  # = (scale * x - mean) / std, mean in the classifier's own units


@dataclass
class Component:
    """One score in the head: which score, reading which input (``logits``, ``own-score`` or a feature source)."""

    score: Score
    source: str
    reference: np.ndarray | None = None  # sorted in-distribution scores: the p-value table when combining


class Head(nn.Module):
    """(logits, then one tensor per feature input) -> (probabilities, ood_score, logits). One component: its score.
    Several: Fisher's method on their conformal p-values, -2 sum log p, so that each score counts by how unusual
    it finds the image among in-distribution images, whatever its units."""

    def __init__(self, components: list[Component]):
        super().__init__()
        # the tensors it reads after the logits, in this order: feature sources and "own-score"
        self.inputs = sorted({c.source for c in components} - {LOGITS})
        self.scores = nn.ModuleList(c.score.module() for c in components)
        self.sources = [c.source for c in components]
        for i, c in enumerate(components):
            if c.reference is not None:
                self.register_buffer(f"table{i}", torch.tensor(np.sort(c.reference), dtype=torch.float32))

    def component_scores(self, logits: torch.Tensor, extra: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        given = dict(zip(self.inputs, extra, strict=True))
        return [module(logits, given.get(source)) for module, source in zip(self.scores, self.sources, strict=True)]

    def forward(self, logits: torch.Tensor, *extra: torch.Tensor):
        scores = self.component_scores(logits, extra)
        if len(scores) == 1:
            score = scores[0]
        else:
            score = torch.zeros_like(scores[0])
            for i, s in enumerate(scores):
                table = getattr(self, f"table{i}")
                at_or_above = (table[None, :] >= s[:, None]).float().sum(1)
                score = score - 2.0 * torch.log((1.0 + at_or_above) / (table.shape[0] + 1.0))
        return torch.softmax(logits, 1), score, logits


def fisher_numpy(scores: list[np.ndarray], tables: list[np.ndarray]) -> np.ndarray:
    """The reference of ``Head``'s combination."""
    total = np.zeros(len(scores[0]))
    for s, t in zip(scores, tables, strict=True):
        at_or_above = len(t) - np.searchsorted(np.sort(t), s, side="left")
        total -= 2.0 * np.log((1.0 + at_or_above) / (len(t) + 1.0))
    return total


def to_onnx(
    module: nn.Module, examples: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str]
) -> onnx.ModelProto:
    """``module`` as an ONNX graph with a dynamic batch dimension (examples of 2: a batch of 1 would specialise).
    ``Head`` takes its feature tensors as ``*extra``, which torch.export sees as one tuple argument."""
    n = torch.export.Dim("N")
    dims = tuple({0: n} for _ in examples)
    if isinstance(module, Head) and len(examples) > 1:
        dims = ({0: n}, dims[1:])
    program = torch.onnx.export(
        module.eval(),
        examples,
        input_names=inputs,
        output_names=outputs,
        dynamic_shapes=dims,
        dynamo=True,
        optimize=True,
        verbose=False,
    )
    return program.model_proto
