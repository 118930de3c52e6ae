"""``python -m training.toy2d``: the two-moons picture of why ReLU nets need ACET.

Trains plain, CEDA and ACET MLPs on two moons scaled to [0, 1]^2 and draws their max-confidence
maps twice: on the data box and zoomed out to [-10, 10]^2. A plain ReLU net is piecewise affine, so
far from the data its logits grow linearly and its confidence goes to 1 (Hein et al. 2019, Thm 3.1);
noise training pushes that region further out.

A command, so it sits at the top of ``training/`` beside ``bundled``: it composes the rooms (methods trained by
the ``run`` room's loop on the ``data`` room's two moons) and belongs to none of them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .methods import spec
from .run import checkpoint
from .run.loop import train

VARIANTS = {"plain": spec("plain"), "CEDA": spec("acet", pgd_steps=0), "ACET": spec("acet", pgd_steps=20)}


def train_variants(out: Path, epochs: int, seed: int, progress: bool = False) -> dict[str, torch.nn.Module]:
    nets = {}
    for label, method in VARIANTS.items():
        cfg = TrainConfig(
            dataset="moons",
            model="mlp",
            method=method,
            epochs=epochs,
            batch_size=64,
            lr=0.05,
            weight_decay=5e-4,
            seed=seed,
            out=str(out / label.lower()),
            progress=progress,
            device="cpu",
        )
        model, _, _ = checkpoint.build_model(checkpoint.load(train(cfg)))
        nets[label] = model.eval()
    return nets


@torch.no_grad()
def confidence(model: torch.nn.Module, points: np.ndarray) -> np.ndarray:
    return torch.softmax(model(torch.from_numpy(points).float()), 1).max(1).values.numpy()


def far_ring(scale: float = 10.0, n: int = 360) -> np.ndarray:
    """Points on a circle ``scale`` times the data box's half-width away from its centre."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return 0.5 + 0.5 * scale * np.stack([np.cos(a), np.sin(a)], 1)


def plot(nets: dict[str, torch.nn.Module], data: tuple[np.ndarray, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = data
    fig, axes = plt.subplots(2, len(nets), figsize=(4 * len(nets), 8), constrained_layout=True)
    for row, (lo, hi) in enumerate(((-0.25, 1.25), (-10.0, 10.0))):
        g = np.linspace(lo, hi, 300)
        xx, yy = np.meshgrid(g, g)
        grid = np.stack([xx.ravel(), yy.ravel()], 1)
        for col, (label, net) in enumerate(nets.items()):
            ax = axes[row, col]
            im = ax.contourf(
                xx,
                yy,
                confidence(net, grid).reshape(xx.shape),
                levels=np.linspace(0.5, 1, 11),
                cmap="viridis",
                vmin=0.5,
                vmax=1,
            )
            ax.scatter(x[:, 0], x[:, 1], c=y, s=3, cmap="coolwarm", edgecolors="none")
            ax.set_title(f"{label}: max confidence on [{lo}, {hi}]^2")
            ax.set_aspect("equal")
    fig.colorbar(im, ax=axes, shrink=0.6, label="max softmax probability")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("docs/results/toy2d.png"), help="PNG to write")
    p.add_argument("--runs", type=Path, default=Path("runs/toy2d"), help="checkpoints of the three MLPs")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t = time.perf_counter()
    nets = train_variants(args.runs, args.epochs, args.seed)
    from .data.datasets import load

    train_split = load("moons", seed=args.seed).train
    plot(nets, (train_split.x.numpy(), train_split.y.numpy()), args.out)
    ring = far_ring()
    far = {label: float(confidence(net, ring).max()) for label, net in nets.items()}
    print("max confidence on a ring 10x outside the data box: " + ", ".join(f"{k} {v:.3f}" for k, v in far.items()))
    print(f"wrote {args.out} in {time.perf_counter() - t:.0f}s")
    return far


if __name__ == "__main__":
    main()
