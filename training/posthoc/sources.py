"""The graph around a classifier, in two uses: the *extractor* (every tensor a score may read, exposed as outputs,
run once over the in-distribution and outlier images) and the *served file* (the same graph ending in a ``Head``).

The extractor joins, each under its own prefix, ``prep/`` (the contract's [0, 1] pixels to the classifier's
convention), ``clf/`` (the classifier, untouched) and ``net{i}/`` (a pretrained feature network per extra source,
reading the same ``images``); the served file is the extractor (``x/``, quantized first for an int8 file) and the
``head/``. Fitting reads the extractor's outputs, so the fitted values match what the served file computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import nn

from modelfile import INPUT_NAME, OUTPUT_NAMES, ClassifierInput, FeatureSource
from modelfile.signature import OUTPUTS

from ..data import datasets
from ..evaluation.scorers import batches
from . import graph, parts
from .parts import LOGITS

OWN, OWN_SCORE = "own", "own-score"


@dataclass
class Branch:
    """A pretrained feature network run on the same upload: its graph and what the metadata says of it."""

    model: onnx.ModelProto
    source: FeatureSource


@dataclass
class Wrapped:
    """A classifier and everything joined around it."""

    clf: graph.Classifier
    prep: onnx.ModelProto
    shape: tuple[int, int, int]  # the contract's C, H, W
    branches: list[Branch] = field(default_factory=list)

    @property
    def tensors(self) -> dict[str, str]:
        """Each readable input of a score -> its tensor in the joined graph."""
        out = {LOGITS: "clf/" + self.clf.logits}
        if self.clf.features is not None:
            out[OWN] = "clf/" + self.clf.features
        if self.clf.own_score is not None:
            out[OWN_SCORE] = "clf/" + self.clf.own_score
        out |= {b.source.name: f"net{i}/features" for i, b in enumerate(self.branches)}
        return out

    def sources(self, dims: dict[str, int]) -> list[FeatureSource]:
        """What the metadata records of each feature space, ``dims`` measured by the extractor."""
        own = [FeatureSource(name=OWN, tensor=self.clf.features, dim=dims[OWN])] if OWN in dims else []
        return own + [b.source for b in self.branches]

    def extractor(self) -> onnx.ModelProto:
        """images -> one output per readable tensor, named by ``tensors``' keys."""
        parts_ = [(self.prep, "prep/", {INPUT_NAME: INPUT_NAME}), (self.clf.model, "clf/", {self.clf.input: "prep/x"})]
        parts_ += [(b.model, f"net{i}/", {INPUT_NAME: INPUT_NAME}) for i, b in enumerate(self.branches)]
        return graph.join(parts_, {name: t for name, t in self.tensors.items()})


def served(extractor: onnx.ModelProto, head: parts.Head, dims: dict[str, int]) -> onnx.ModelProto:
    """The file's graph: the extractor, then ``head`` reading logits and ``head.inputs`` in order."""
    width = lambda name: () if name == OWN_SCORE else (dims[name],)
    examples = (torch.rand(2, dims[LOGITS]), *(torch.rand(2, *width(n)) for n in head.inputs))
    names = ["z", *[f"in{i}" for i in range(len(head.inputs))]]  # not "logits": the head outputs that name
    head_graph = parts.to_onnx(head, examples, names, list(OUTPUT_NAMES))
    wiring = {"z": "x/" + LOGITS} | {f"in{i}": "x/" + n for i, n in enumerate(head.inputs)}
    shapes = {t.name: [{"classes": dims[LOGITS]}.get(d, d) for d in t.dims] for t in OUTPUTS}
    return graph.join(
        [(extractor, "x/", {INPUT_NAME: INPUT_NAME}), (head_graph, "head/", wiring)],
        {o: "head/" + o for o in OUTPUT_NAMES},
        shapes,
    )


def preprocess(spec: ClassifierInput, shape: tuple[int, int, int]) -> onnx.ModelProto:
    return parts.to_onnx(parts.Preprocess(spec), (torch.rand(2, *shape),), [INPUT_NAME], ["x"])


def branch(module: nn.Module, source: FeatureSource, shape: tuple[int, int, int]) -> Branch:
    return Branch(parts.to_onnx(module, (torch.rand(2, *shape),), [INPUT_NAME], ["features"]), source)


def run(
    session, images: torch.Tensor, names: list[str], batch_size: int = 256, desc: str = ""
) -> dict[str, np.ndarray]:
    """``names`` of a session's outputs for uint8 or float images in [0, 1], in batches, with a progress bar."""
    got: dict[str, list] = {n: [] for n in names}
    for s in batches(len(images), batch_size, desc, progress=bool(desc)):
        x = datasets.as_float(images[s]).numpy()
        for n, v in zip(names, session.run(names, {INPUT_NAME: x}), strict=True):
            got[n].append(v)
    return {n: np.concatenate(v) for n, v in got.items()}
