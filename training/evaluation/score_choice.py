"""Which OOD score to export, measured: each score a method offers, on the validation split against the
training noise (``training.data.noise``), never on the test split or an OOD set that is reported."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import datasets
from ..data.noise import noise_batch
from ..methods import Method
from . import ood_metrics


@torch.no_grad()
def compare(model: nn.Module, method: Method, val_x: torch.Tensor, seed: int = 0, n: int = 2000) -> dict[str, float]:
    """score name -> AUROC (validation images positive, training-noise images negative)."""
    if val_x.ndim != 4 or not method.score_options:
        return {}
    x = datasets.as_float(val_x[:n])
    noise = noise_batch(x, len(x), torch.Generator().manual_seed(seed))
    result = {}
    for name in method.score_options:
        scored = method.with_score(name)
        id_score, noise_score = (_scores(model, scored, images) for images in (x, noise))
        result[name] = ood_metrics.auroc(-id_score, -noise_score)
    return result


def _scores(model: nn.Module, method: Method, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    return torch.cat(
        [method.outputs(model, x[i : i + batch_size])[1].double() for i in range(0, len(x), batch_size)]
    ).numpy()
