"""The one training loop every method shares: CPU, one GPU, or many through ``torchrun``.

Read top to bottom: set up (distributed or not), data, model, optimiser, resume, then epochs of
batches; rank 0 alone logs, checkpoints and exports. Distributed mode is keyed on the ``RANK``
environment variable that torchrun sets, so the same command runs with or without torchrun.
"""

from __future__ import annotations

import atexit
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data as datasets
from . import methods, models


@dataclass
class TrainConfig:
    dataset: str = "svhn"
    data_root: str = "data"
    model: str = "resnet_small"
    method: dict = field(default_factory=lambda: {"name": "plain"})
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[float, ...] = (0.5, 0.75, 0.9)
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    out: str = "runs/default"
    resume: bool = False
    download: bool = True
    export: str | None = None
    init_from: str | None = None
    progress: bool = True


def checkpoint_payload(model: nn.Module, cfg: TrainConfig, info: datasets.DatasetInfo, **extra) -> dict:
    """Plain tensors and builtins only, so ``torch.load(weights_only=True)`` can read it."""
    return {"model": model.state_dict(), "config": asdict(cfg), "dataset": info.to_dict(), **extra}


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def build_model(ckpt: dict) -> tuple[nn.Module, object, datasets.DatasetInfo]:
    """Rebuild (model, method, dataset info) from a checkpoint dict."""
    cfg = ckpt["config"]
    info = datasets.DatasetInfo.from_dict(ckpt["dataset"])
    method = methods.from_state(cfg["method"])
    model = models.build(cfg["model"], info, method.make_head)
    model.load_state_dict(ckpt["model"])
    return model, method, info


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for, but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _save(payload: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a kill mid-write must never leave a half-written last.pt


def _batches(n: int, batch_size: int, epoch: int, seed: int, rank: int, world: int):
    """Index batches for one epoch: one seeded permutation shared by all ranks, then sharded.

    Every rank gets the same number of full batches (DDP needs equal step counts).
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = n // world
    mine = perm[rank * per_rank : (rank + 1) * per_rank]
    for i in range(0, len(mine) - batch_size + 1, batch_size):
        yield torch.from_numpy(mine[i : i + batch_size])


@torch.no_grad()
def accuracy(model: nn.Module, split: datasets.Split, device: torch.device, batch_size: int = 512) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(split), batch_size):
        x = datasets.as_float(split.x[i : i + batch_size]).to(device)
        correct += (model(x).argmax(1).cpu() == split.y[i : i + batch_size]).sum().item()
    return correct / max(1, len(split))


def _check_ranks_in_sync(model: nn.Module, rank: int, world: int) -> None:
    """DDP keeps replicas identical only if every rank ran the same steps: verify it, cheaply."""
    flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    digest = torch.tensor([flat.sum().item(), flat.square().sum().item(), flat[::97].sum().item()],
                          dtype=torch.float64, device=next(model.parameters()).device)
    gathered = [torch.zeros_like(digest) for _ in range(world)]
    torch.distributed.all_gather(gathered, digest)
    if rank == 0:
        same = all(torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered)
        print(f"ranks in sync: {same} (parameter digest {gathered[0].tolist()} on rank 0 of {world})", flush=True)
        if not same:
            raise RuntimeError(f"DDP replicas diverged: digests {[g.tolist() for g in gathered]}")


def train(cfg: TrainConfig) -> Path:
    """Train; returns the path of the final checkpoint (``OUT/last.pt``)."""
    # -- distributed set-up (torchrun sets RANK / LOCAL_RANK / WORLD_SIZE) --
    ddp = "RANK" in os.environ
    rank, local_rank, world = 0, 0, 1
    if ddp:
        rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    device = _pick_device(cfg.device, local_rank)
    if ddp and not torch.distributed.is_initialized():
        # Once per process: a run of several phases (MCD) calls train() again, and re-creating the group
        # on torchrun's store races (a fast rank can read the previous group's keys and move on alone).
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(torch.distributed.destroy_process_group)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    master = rank == 0
    torch.manual_seed(cfg.seed)

    # -- data --
    splits = datasets.load(cfg.dataset, cfg.data_root, val_fraction=cfg.val_fraction, seed=cfg.seed,
                           download=cfg.download and master)
    info = splits.info
    x_train, y_train = splits.train.x.to(device), splits.train.y.to(device)
    steps_per_epoch = (len(splits.train) // world) // cfg.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(f"batch size {cfg.batch_size} x {world} ranks is larger than the training set")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)

    # -- model and optimiser --
    method = methods.from_state(cfg.method)
    method.generator = torch.Generator(device).manual_seed(cfg.seed * 1000 + rank)  # noise differs per rank
    model = models.build(cfg.model, info, method.make_head).to(device)
    if cfg.init_from and not (cfg.resume and (Path(cfg.out) / "last.pt").exists()):
        # fine-tuning: weights from another run (same architecture and head), fresh optimiser and schedule
        model.load_state_dict(load_checkpoint(cfg.init_from, map_location=device)["model"])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    milestones = sorted({int(f * total_steps) for f in cfg.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda" and amp_dtype == torch.float16)

    out = Path(cfg.out)
    ckpt_path = out / "last.pt"
    start_epoch, step = 0, 0
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
        if master:
            print(f"resuming {ckpt_path} after epoch {ckpt['epoch'] + 1} (step {step})", flush=True)
    elif cfg.resume and master:
        print(f"--resume: no checkpoint at {ckpt_path}, starting from scratch", flush=True)
    # find_unused_parameters: a method whose step leaves some parameters without gradients (MCD's step B) says so
    net = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None,
                                              find_unused_parameters=getattr(method, "find_unused_parameters", False)) \
        if ddp else model

    writer = None
    if master:
        out.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        print(f"{method.name} {cfg.model} on {info.name}: {len(splits.train)} train / {len(splits.val)} val / "
              f"{len(splits.test)} test images, {total_steps} steps on {device} x{world}", flush=True)

    from tqdm import tqdm

    t0, seen = time.perf_counter(), 0
    for epoch in range(start_epoch, epochs):
        if step >= total_steps:
            break
        model.train()
        n_steps = min(steps_per_epoch, total_steps - step)
        bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not (master and cfg.progress),
                   dynamic_ncols=True, leave=False)
        sums: dict[str, float] = {}
        done = 0
        for idx in _batches(len(splits.train), cfg.batch_size, epoch, cfg.seed, rank, world):
            if done >= n_steps:
                break
            idx = idx.to(device)
            x = datasets.augment(datasets.as_float(x_train[idx]), info.augment)
            y = y_train[idx]
            stats = {}
            # one optimiser step per loss in ``method.updates`` if it has them (MCD: steps A then B), else one
            for loss_of in getattr(method, "updates", (method.loss,)):
                with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.amp and device.type == "cuda"):
                    loss, more = loss_of(model, net, x, y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                stats.update(more)
            sched.step()
            step += 1
            seen += len(idx) * world
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            done += 1
            bar.update(1)
            bar.set_postfix({k: f"{v / done:.3f}" for k, v in sums.items()}, refresh=False)
            if writer is not None:
                for k, v in stats.items():
                    writer.add_scalar(f"train/{k}", float(v), step)
                writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
        bar.close()

        if master:
            val_acc = accuracy(model, splits.val, device)
            writer.add_scalar("val/acc", val_acc, step)
            rate = seen / (time.perf_counter() - t0)
            means = "  ".join(f"{k} {v / max(1, done):.4f}" for k, v in sums.items())
            _save(checkpoint_payload(model, cfg, info, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                                     scaler=scaler.state_dict(), epoch=epoch, step=step), ckpt_path)
            print(f"epoch {epoch + 1}/{epochs}  step {step}  {means}  val_acc {val_acc:.4f}  "
                  f"{rate:.0f} img/s", flush=True)

    if master:
        writer.close()
        test_acc = accuracy(model, splits.test, device)
        print(f"done: test accuracy {test_acc:.4f} on {len(splits.test)} images; checkpoint {ckpt_path}", flush=True)
        if cfg.export:
            from .export import export_checkpoint

            export_checkpoint(ckpt_path, cfg.export)
    if ddp:
        _check_ranks_in_sync(model, rank, world)
    return ckpt_path
