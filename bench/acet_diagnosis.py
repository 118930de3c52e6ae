"""Why an ACET fine-tune from a plain model does not learn: the noise loss's gradient, measured.

    python bench/acet_diagnosis.py --checkpoint base=runs/cifar10-oe/base/last.pt \\
        --checkpoint oe=runs/cifar10-oe/oe/last.pt --out docs/results/cifar10-oe/diagnosis.json

For each checkpoint, on 512 draws of its training noise moved by PGD (5 and 10 steps, L-inf 0.3, BatchNorm in
inference mode, as ACET's training attack runs): the mean max confidence (MMC) of the moved noise, and the norm of
the gradient, with respect to the network's weights, of each noise loss ACET can train with (per noise image, as
the training loss sums them), beside the clean cross-entropy's on 512 training images. A loss whose gradient is
orders of magnitude below the clean loss's cannot move the model in a few hundred steps, whatever the learning
rate: log max-softmax on noise the model is sure about has d/dlogits = onehot - p, which vanishes as p_max -> 1;
cross-entropy to the uniform label has p - 1/K, which does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.data import datasets  # noqa: E402
from training.data.noise import noise_batch  # noqa: E402
from training.methods.attacks import max_log_confidence, pgd  # noqa: E402
from training.run.checkpoint import build_model, data_splits  # noqa: E402
from training.run.checkpoint import load as load_checkpoint  # noqa: E402

N = 512


def grad_norm(model: torch.nn.Module, loss: torch.Tensor) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))


def diagnose(path: Path, data_root: str | None) -> dict:
    ckpt = load_checkpoint(path)
    model, _, _ = build_model(ckpt)
    model.train()  # the training forward: batch statistics, as the loop computes the loss
    splits = data_splits(ckpt, data_root)
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(splits.train.y), generator=g)[:N]
    x, y = datasets.as_float(splits.train.x[pick]), splits.train.y[pick]
    clean = grad_norm(model, torch.nn.functional.cross_entropy(model(x), y))
    row = {"clean cross-entropy": clean}
    for steps in (0, 5, 10):
        noise = noise_batch(x, N, g)
        if steps:
            noise = pgd(
                model, noise, max_log_confidence, eps=0.3, steps=steps, step_size=0.3 / steps * 2.5, generator=g
            )
        logits = model(torch.cat([x, noise]))[N:]
        log_p = torch.log_softmax(logits.float(), 1)
        row[f"PGD-{steps}"] = {
            "noise MMC": float(log_p.detach().exp().max(1).values.mean()),
            "max_conf loss gradient": grad_norm(model, log_p.max(1).values.mean()),
            "uniform loss gradient": grad_norm(model, -log_p.mean(1).mean()),
        }
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=PATH")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here too")
    args = p.parse_args()
    torch.manual_seed(0)
    result = {}
    for item in args.checkpoint:
        label, _, path = item.rpartition("=")
        result[label or path] = diagnose(Path(path), args.data_root)
        print(json.dumps({label or path: result[label or path]}, indent=1), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
