"""How well do EfficientNet-Lite0's frozen ImageNet features separate CIFAR-10's classes, by input size? The question
behind the finetune recipe (training/run/recipes.py): if a linear probe were enough, fine-tuning the body would not pay.

    python bench/linear_probe.py --data-root ../shared/data --sizes 64,96     # ~5 min on 2 cores

A logistic regression (scikit-learn, C 0.5) on the pooled features of 6,000 training images drawn at random (seed 0),
scored on 2,000 validation images; the images upsampled from 32 px as ``--image-size`` upsamples them.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from training.data import datasets
from training.nets import models, pretrained


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--sizes", default="64,96")
    args = p.parse_args()
    splits = datasets.load("cifar10", args.data_root, download=False)
    rng = np.random.default_rng(0)
    train = splits.train.subset(np.sort(rng.permutation(len(splits.train))[:6000]))
    val = splits.val.subset(np.sort(rng.permutation(len(splits.val))[:2000]))
    for size in map(int, args.sizes.split(",")):
        info = dataclasses.replace(splits.info, height=size, width=size)
        model = models.build("efficientnet-lite0", info, lambda d, k: torch.nn.Linear(d, k))
        pretrained.load_weights(model.backbone, "efficientnet-lite0", None)
        model.eval()

        def features(x: torch.Tensor, model=model, size=size) -> np.ndarray:
            with torch.no_grad():
                parts = [
                    model.features(datasets.to_shape(x[i : i + 500], 3, size, size)) for i in range(0, len(x), 500)
                ]
            return torch.cat(parts).numpy()

        probe = LogisticRegression(max_iter=500, C=0.5).fit(features(train.x), train.y.numpy())
        print(f"{size} px: linear probe accuracy {probe.score(features(val.x), val.y.numpy()):.3f}", flush=True)


if __name__ == "__main__":
    main()
