"""Training throughput of plain, CEDA and ACET steps, and ACET's cost against its FLOP floor; with
``--networks``, each network's bare training step beside the training loop's, per precision.

    python bench/train_speed.py [--model resnet_small --dataset-shape 3x32x32 --pgd-steps 40 --device cuda]
    python bench/train_speed.py --networks fastnet,resnet_small --data-root ../shared/data

``--networks``: for each network, in fp32 and in the run's mixed precision (``--amp``: bf16 + channels_last on a
CPU with native bf16), the bare step (forward, backward, SGD on one random batch, as below) and the loop
(``training.run.loop.train`` on CIFAR-10 with the network's recipe, one epoch: batch cutting, augmentation, the step,
lookahead, progress and TensorBoard, the end-of-epoch validation and checkpoint), images/s each and their ratio, the
GFLOP/s the loop's rate is (forward and backward FLOPs counted by torch's FlopCounterMode) and the minutes its
recipe's epochs take at that rate.

Runs real training steps (forward, backward, SGD update; for ACET the PGD attack on the noise) on
random [0,1] images of the chosen shape, after warm-up, and prints clean images per second. The
floor: ACET needs 1 + at_frac x (pgd_steps + 1) forward-backward passes per clean image where
plain needs 1 (the attack evaluates pgd_steps + 1 points, and the training step sees the noise
once more). The attack's backward passes only need the gradient with respect to the input (no
weight gradients, no optimiser step), so they are somewhat cheaper than a training pass and the
measured ratio can sit a little below the floor; far above it means overhead outside the passes.
All variants are measured in one run, so the ratios hold on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from training import methods
from training.config import TrainConfig
from training.data.datasets import DatasetInfo
from training.nets import models
from training.run.checkpoint import load as load_checkpoint
from training.run.loop import train
from training.run.precision import Precision
from training.run.recipes import RECIPES

RECIPE_OF = {"fastnet": "fast", "fastnet_relu": "fast", "fastnet_wide": "fast-long", "resnet_small": "paper"}


def bench(
    method_state: dict, info: DatasetInfo, arch: str, batch: int, steps: int, device: torch.device, amp: bool
) -> float:
    method = methods.build(method_state)
    method.generator = torch.Generator(device).manual_seed(0)
    precision = Precision.for_run(device, amp)
    model = precision.model(models.build(arch, info, method.make_head).to(device).train())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    x = precision.images(torch.rand(batch, info.channels, info.height, info.width, device=device))
    y = torch.randint(0, info.num_classes, (batch,), device=device)

    def step():
        with precision.autocast():
            loss, _ = method.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: allocator, cuDNN autotuning
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def training_flops(arch: str, info: DatasetInfo) -> float:
    """Forward + backward FLOPs of one training image (a multiply-add counts 2)."""
    method = methods.build(methods.spec("plain"))
    model = models.build(arch, info, method.make_head).train()
    x = torch.rand(8, info.channels, info.height, info.width)
    with FlopCounterMode(display=False) as counter:
        method.loss(model, x, torch.zeros(8, dtype=torch.long))[0].backward()
    return counter.get_total_flops() / len(x)


def loop_rate(arch: str, amp: bool, data_root: str, out: str) -> tuple[float, int]:
    """(images/s of one epoch of the training loop on CIFAR-10 with the network's recipe, the recipe's epochs)."""
    recipe = {**RECIPES[RECIPE_OF.get(arch, "fast")], "model": arch, "amp": amp}
    cfg = TrainConfig(
        dataset="cifar10",
        data_root=data_root,
        method=methods.spec("plain"),
        download=False,
        out=out,
        progress=False,
        device="cpu",
        **recipe,
    )
    ckpt = load_checkpoint(train(replace(cfg, epochs=1, max_steps=None)))
    return ckpt["step"] * cfg.batch_size / ckpt["train_seconds"], cfg.epochs


def networks(args: argparse.Namespace) -> None:
    info = DatasetInfo("cifar10", tuple(str(i) for i in range(10)), 3, 32, 32, (0.5,) * 3, (0.25,) * 3)
    device = torch.device("cpu")
    print(
        f"CIFAR-10 networks on {device} ({platform.machine()}, {torch.get_num_threads()} threads); "
        f"native bf16: {Precision.for_run(device, True, say=lambda _: None).dtype is not None}"
    )
    print(
        "| network | precision | batch | bare step img/s | loop img/s | loop / bare | GFLOP/s (loop) | "
        "recipe epochs | recipe minutes |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for arch in args.networks.split(","):
        flops = training_flops(arch, info)
        batch = RECIPES[RECIPE_OF.get(arch, "fast")]["batch_size"]
        for amp in (False, True):
            bare = bench(methods.spec("plain"), info, arch, batch, args.steps, device, amp)
            with tempfile.TemporaryDirectory() as out:
                rate, epochs = loop_rate(arch, amp, args.data_root, out)
            name = Precision.for_run(device, amp, say=lambda _: None).name
            print(
                f"| {arch} | {name} | {batch} | {bare:.0f} | {rate:.0f} | {rate / bare:.2f} | "
                f"{rate * flops / 1e9:.0f} | {epochs} | {epochs * 45_000 / rate / 60:.1f} |",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="lenet")
    p.add_argument("--dataset-shape", default="1x28x28", help="CxHxW of the images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per method")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--at-frac", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="mixed precision (training.run.precision)")
    p.add_argument(
        "--networks",
        default=None,
        metavar="A,B",
        help="instead: bare step vs training loop per network and precision on CIFAR-10 (--data-root)",
    )
    p.add_argument("--data-root", default="../shared/data", help="with --networks: where CIFAR-10 is")
    args = p.parse_args()
    if args.networks:
        return networks(args)
    c, h, w = (int(v) for v in args.dataset_shape.split("x"))
    info = DatasetInfo("bench", tuple(str(i) for i in range(10)), c, h, w, (0.5,) * c, (0.25,) * c)
    device = torch.device(args.device)
    variants = {
        "plain": methods.spec("plain"),
        "CEDA": methods.spec("acet", at_frac=args.at_frac, pgd_steps=0),
        "ACET": methods.spec("acet", at_frac=args.at_frac, pgd_steps=args.pgd_steps),
    }
    print(
        f"{args.model} {args.dataset_shape} batch {args.batch_size} on {device} ({platform.machine()}, "
        f"{torch.get_num_threads()} threads), amp={args.amp}, ACET pgd_steps={args.pgd_steps} at_frac={args.at_frac}"
    )
    rates = {}
    for name, state in variants.items():
        rates[name] = bench(state, info, args.model, args.batch_size, args.steps, device, args.amp)
        print(f"  {name:6s} {rates[name]:9.1f} clean img/s", flush=True)
    floor = 1 + args.at_frac * (args.pgd_steps + 1)
    print(f"  CEDA/plain time ratio {rates['plain'] / rates['CEDA']:.2f} (floor {1 + args.at_frac:.2f})")
    print(
        f"  ACET/plain time ratio {rates['plain'] / rates['ACET']:.2f} (FLOP floor {floor:.2f} = 1 + at_frac x "
        f"(pgd_steps + 1))"
    )


if __name__ == "__main__":
    main()
