"""Training throughput of plain, CEDA and ACET steps, and ACET's cost against its FLOP floor.

    python bench/train_speed.py [--model resnet_small --dataset-shape 3x32x32 --pgd-steps 40 --device cuda]

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
import time

import torch

from training import methods, models
from training.data import DatasetInfo


def bench(method_state: dict, info: DatasetInfo, arch: str, batch: int, steps: int, device: torch.device,
          amp: bool) -> float:
    method = methods.build(method_state)
    method.generator = torch.Generator(device).manual_seed(0)
    model = models.build(arch, info, method.make_head).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, info.channels, info.height, info.width, device=device)
    y = torch.randint(0, info.num_classes, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="lenet")
    p.add_argument("--dataset-shape", default="1x28x28", help="CxHxW of the images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per method")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--at-frac", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    args = p.parse_args()
    c, h, w = (int(v) for v in args.dataset_shape.split("x"))
    info = DatasetInfo("bench", tuple(str(i) for i in range(10)), c, h, w, (0.5,) * c, (0.25,) * c)
    device = torch.device(args.device)
    variants = {
        "plain": methods.spec("plain"),
        "CEDA": methods.spec("acet", at_frac=args.at_frac, pgd_steps=0),
        "ACET": methods.spec("acet", at_frac=args.at_frac, pgd_steps=args.pgd_steps),
    }
    print(f"{args.model} {args.dataset_shape} batch {args.batch_size} on {device} ({platform.machine()}, "
          f"{torch.get_num_threads()} threads), amp={args.amp}, ACET pgd_steps={args.pgd_steps} at_frac={args.at_frac}")
    rates = {}
    for name, state in variants.items():
        rates[name] = bench(state, info, args.model, args.batch_size, args.steps, device, args.amp)
        print(f"  {name:6s} {rates[name]:9.1f} clean img/s", flush=True)
    floor = 1 + args.at_frac * (args.pgd_steps + 1)
    print(f"  CEDA/plain time ratio {rates['plain'] / rates['CEDA']:.2f} (floor {1 + args.at_frac:.2f})")
    print(f"  ACET/plain time ratio {rates['plain'] / rates['ACET']:.2f} (FLOP floor {floor:.2f} = 1 + at_frac x "
          f"(pgd_steps + 1))")


if __name__ == "__main__":
    main()
