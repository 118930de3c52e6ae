"""Flags shared by every training entry point (``training.acet``, ``training.isomax``, ...)."""

from __future__ import annotations

import argparse
import sys

from .data import DATASET_NAMES, DatasetUnavailable
from .loop import TrainConfig, train
from .models import ARCHITECTURES

DEFAULT_LR = {"lenet": 0.05, "mlp": 0.05, "resnet_small": 0.1, "resnet18": 0.1}


def parser(description: str, *, default_model: str = "resnet_small") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="svhn",
                   help=f"one of {', '.join(DATASET_NAMES)}, or imagefolder:PATH (PATH/train, PATH/test)")
    g.add_argument("--data-root", default="data", help="where torchvision data sets live / are downloaded to")
    g.add_argument("--no-download", dest="download", action="store_false", help="never try to download data")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training data held out (seeded) for validation and threshold calibration")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--model", default=default_model, choices=ARCHITECTURES, help="architecture")
    g.add_argument("--epochs", type=int, default=100, help="training epochs")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps in total")
    g.add_argument("--batch-size", type=int, default=128, help="clean images per step and rank")
    g.add_argument("--lr", type=float, default=None,
                   help="SGD learning rate, divided by 10 at 50/75/90%% of training "
                        f"(default by model: {', '.join(f'{k} {v}' for k, v in DEFAULT_LR.items())})")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay")
    g = p.add_argument_group("run")
    g.add_argument("--out", default=None, help="run directory for checkpoints and TensorBoard (default runs/NAME)")
    g.add_argument("--seed", type=int, default=0, help="seed for data split, order, noise and init")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train")
    g.add_argument("--amp", action="store_true", help="bf16 (or fp16) autocast on CUDA")
    g.add_argument("--resume", action="store_true", help="continue OUT/last.pt where it stopped")
    g.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from this checkpoint's weights (fine-tuning; same model and head)")
    g.add_argument("--export", default=None, metavar="PATH.onnx", help="export the final model to ONNX")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def add_noise_flags(p: argparse.ArgumentParser, *, at_frac: float) -> None:
    g = p.add_argument_group("CEDA / ACET noise training")
    g.add_argument("--at-frac", type=float, default=at_frac,
                   help="noise images per clean image in each batch (0 = no noise term)")
    g.add_argument("--pgd-steps", type=int, default=40, help="PGD steps on the noise (0 = CEDA)")
    g.add_argument("--eps", type=float, default=0.3, help="L-inf radius of the attack on the noise")
    g.add_argument("--step-factor", type=float, default=2.5, help="PGD step = eps / steps x this")
    g.add_argument("--noise-loss", default="max_conf", choices=("max_conf", "uniform"),
                   help="loss on noise: log max-softmax, or cross-entropy to the uniform label")


def noise_options(args: argparse.Namespace) -> dict:
    return {"at_frac": args.at_frac, "pgd_steps": args.pgd_steps, "eps": args.eps,
            "step_factor": args.step_factor, "noise_loss": args.noise_loss}


def run(args: argparse.Namespace, method: dict, run_name: str) -> None:
    cfg = TrainConfig(
        dataset=args.dataset, data_root=args.data_root, model=args.model, method=method, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr or DEFAULT_LR[args.model],
        momentum=args.momentum, weight_decay=args.weight_decay, val_fraction=args.val_fraction, seed=args.seed,
        device=args.device, amp=args.amp, out=args.out or f"runs/{run_name}", resume=args.resume,
        download=args.download, export=args.export, init_from=args.init_from, progress=args.progress,
    )
    try:
        train(cfg)
    except DatasetUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
