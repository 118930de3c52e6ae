"""The one training loop every method shares: CPU, one GPU, or many through ``torchrun``.

``train(cfg)`` reads top to bottom: processes, data, method and model, optimiser, resume, epochs,
test. Distributed mode is keyed on the environment torchrun sets (as in nanoGPT; ``training.ranks`` reads
it), so the same command runs with or without torchrun; ``distributed()`` is the one place that makes the
process group. Rank 0 alone logs and checkpoints. Exporting is the CLI's next step, not the loop's.
"""

from __future__ import annotations

import atexit
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import methods
from ..config import TrainConfig, is_pretrained
from ..data import datasets, stream
from ..nets import models, pretrained
from ..ranks import Ranks, ranks, under_torchrun
from . import checkpoint
from .lookahead import Lookahead
from .optim import Optimisation
from .phases import Phases
from .precision import Precision
from .progress import EpochLog


@dataclass(frozen=True)
class Processes(Ranks):
    """This process's place among the ranks (``training.ranks``) and the device it trains on."""

    device: torch.device = field(kw_only=True)

    @property
    def ddp(self) -> bool:
        return under_torchrun()


def distributed(device: str) -> Processes:
    """This process's rank and device; under torchrun, the process group (made once per process, torn
    down at exit: a run of several phases, MCD's, calls ``train`` again, and re-creating the group on
    torchrun's store races: a fast rank can read the previous group's keys and move on alone)."""
    here = ranks()
    dev = _pick_device(device, here.local_rank)
    if under_torchrun() and not torch.distributed.is_initialized():
        # Imported before the group exists: its functions bind ``group=group.WORLD`` as a default argument at
        # import, and DDP imports it (through torch.distributed._shard). Imported later, those defaults hold
        # the group forever, so destroy_process_group() cannot free it and gloo's C++ threads outlive the
        # interpreter, which aborts now and then at exit ("terminate called without an active exception").
        import torch.distributed.nn as _ddp_functions  # noqa: F401

        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        atexit.register(_tear_down)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return Processes(here.rank, here.local_rank, here.world, device=dev)


def _tear_down() -> None:
    """All ranks leave together: a rank that destroys the group while another still talks to it aborts the
    process ("terminate called without an active exception") after all the work is done. Destroying it
    also joins gloo's threads, provided nothing else holds the group (see ``distributed``)."""
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for, but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


class Step(nn.Module):
    """One optimiser step's forward pass: update ``i`` of the method on the bare model. Under DDP this
    module is what gets wrapped, so a method never sees the wrapper, only the model it trains.

    DDP is told to find unused parameters when a method takes more than one update per batch: one update
    trains the whole model, while several may each train a part only (MCD's step B leaves the extractor without
    a gradient). The rule reads the method's declared updates, not the first step's gradients, so every rank
    decides the same before any step, and a one-update method keeps DDP's cheaper default."""

    def __init__(self, model: nn.Module, method: methods.Method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, i: int, x: torch.Tensor, y: torch.Tensor):
        return self.method.updates[i](self.model, x, y)


WHITENING_IMAGES = 5000  # training images a data-fitted first layer is computed from (airbench: 5,000)


def steps_of(cfg: TrainConfig, n_train: int, world: int) -> tuple[int, int, int]:
    """(steps per epoch, total steps, epochs) of a run."""
    per_epoch = (n_train // world) // cfg.batch_size
    if per_epoch == 0:
        raise SystemExit(f"batch size {cfg.batch_size} x {world} ranks is larger than the training set")
    total = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.epochs * per_epoch, cfg.max_steps)
    return per_epoch, total, math.ceil(total / per_epoch)


def train(cfg: TrainConfig) -> Path:
    """Train; returns the path of the final checkpoint (``OUT/last.pt``)."""
    procs = distributed(cfg.device)
    device, ckpt_path = procs.device, Path(cfg.out) / "last.pt"
    torch.manual_seed(cfg.seed)
    resume = checkpoint.load(ckpt_path, map_location=device) if cfg.resume and ckpt_path.exists() else None
    splits = datasets.load(
        cfg.dataset,
        cfg.data_root,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        download=cfg.download and procs.main,
        image_size=cfg.image_size,
        workers=cfg.workers,
        cache_mb=cfg.cache_mb,
    )
    try:
        return _train(cfg, procs, splits, resume, ckpt_path)
    finally:
        if isinstance(splits.train, stream.Streamed):
            splits.train.close()


def _train(cfg: TrainConfig, procs: Processes, splits: datasets.Splits, resume: dict | None, ckpt_path: Path) -> Path:
    device = procs.device
    steps_per_epoch, total_steps, epochs = steps_of(cfg, len(splits.train), procs.world)
    precision = Precision.for_run(device, cfg.amp, say=print if procs.main else lambda _: None)
    method, model, optim, lookahead, weights = _build(cfg, procs, splits, total_steps, precision, resume)
    phases = Phases(model, cfg, steps_per_epoch)
    start_epoch, step = (resume["epoch"] + 1, resume["step"]) if resume else (0, 0)
    seconds = resume.get("train_seconds", 0.0) if resume else 0.0  # wall time of training so far, across resumes
    history = resume.get("history", []) if resume else []  # per epoch: validation accuracy, minutes so far
    forward = Step(model, method)
    if procs.ddp:
        # several updates per batch may each train a part only (see Step); DDP must then look for unused params
        forward = nn.parallel.DistributedDataParallel(
            forward,
            device_ids=[procs.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=len(method.updates) > 1 or phases.head_steps > 0,
        )
    log = EpochLog(cfg, procs, total_steps) if procs.main else None
    if log:
        log.start(method.label, splits, resume, ckpt_path, precision.name)
    train_y = splits.train.y.to(device)
    # moved to the device once, not every epoch; a streamed folder's workers decode each batch instead
    source = splits.train if isinstance(splits.train, stream.Streamed) else splits.train.x.to(device)
    for epoch in range(start_epoch, epochs):
        n_steps = min(steps_per_epoch, total_steps - step)
        if n_steps <= 0:
            break
        phases.train(model, step)
        started = time.perf_counter()
        flips = datasets.alternating_flips(len(train_y), epoch, cfg.seed) if cfg.flip == "alternating" else None
        batches = list(_batches(len(splits.train), cfg.batch_size, epoch, cfg.seed, procs.rank, procs.world))[:n_steps]
        for i, (idx, images) in enumerate(zip(batches, _images(source, epoch, batches, device), strict=True)):
            if phases.entering_fine_tune(step + i):
                phases.train(model, step + i)
            x = datasets.augment(
                datasets.as_float(images),
                splits.info.augment,
                pad=cfg.translate,
                pad_mode=cfg.pad_mode,
                flip=None if flips is None else flips[idx],
                cutout=cfg.cutout,
            )
            stats = _one_batch(forward, method, optim, precision, precision.images(x), train_y[idx.to(device)])
            if lookahead:
                lookahead.after_step(model, step + i + 1)
            if log:
                log.batch(
                    epoch, epochs, n_steps, step + i + 1, stats, len(idx) * procs.world, optim.sched.get_last_lr()[0]
                )
        step += n_steps
        rng = _rng_states_of_every_rank(method, procs)
        if log:
            val_acc = accuracy(model, splits.val, device, precision)
            seconds += time.perf_counter() - started  # the epoch's wall time, its validation included
            history.append({"epoch": epoch + 1, "val_acc": val_acc, "minutes": seconds / 60})
            extra = {"lookahead": lookahead.state_dict()} if lookahead else {}
            checkpoint.save(
                checkpoint.payload(
                    model,
                    method,
                    cfg,
                    splits.info,
                    **optim.state(),
                    epoch=epoch,
                    step=step,
                    rng=rng,
                    train_seconds=seconds,
                    history=history,
                    pretrained=weights,
                    **extra,
                ),
                ckpt_path,
            )
            log.epoch_end(epoch, epochs, step, val_acc, seconds)
    if log:
        log.finish(accuracy(model, splits.test, device), len(splits.test), ckpt_path, seconds)
    if procs.ddp:
        _check_ranks_in_sync(model, procs)
    return ckpt_path


def _images(source: stream.Streamed | torch.Tensor, epoch: int, batches: list[torch.Tensor], device: torch.device):
    """The uint8 images of each batch of indices: cut from the training tensor already on ``device``, or decoded by a
    streamed folder's workers (``training.data.stream``) ahead of the step."""
    if isinstance(source, stream.Streamed):
        return (x.to(device, non_blocking=True) for x in source.batches(epoch, batches))
    return (source[idx.to(device)] for idx in batches)


def _build(
    cfg: TrainConfig,
    procs: Processes,
    splits: datasets.Splits,
    total_steps: int,
    precision: Precision,
    resume: dict | None,
) -> tuple[methods.Method, nn.Module, Optimisation, Lookahead | None, str | None]:
    """Method, model, optimiser, lookahead and where a pretrained network's weights came from: fresh, from another
    run's weights (``init_from``), or resumed."""
    method = methods.build(cfg.method)
    method.generator = torch.Generator(procs.device).manual_seed(cfg.seed * 1000 + procs.rank)  # noise per rank
    method.smooth_labels(cfg.label_smoothing)
    model = models.build(cfg.model, splits.info, method.make_head).to(procs.device)
    weights = resume.get("pretrained") if resume else None
    if cfg.init_from and resume is None:  # fine-tuning: another run's weights, fresh optimiser and schedule
        start = checkpoint.load(cfg.init_from, map_location=procs.device)
        model.load_state_dict(start["model"])
        weights = start.get("pretrained")
    elif resume is None and is_pretrained(cfg.model):  # every rank reads the same file: replicas start equal
        weights = pretrained.load_weights(model.backbone, cfg.model, cfg.weights)
    elif resume is None:  # the same images on every rank, so every replica starts equal
        first = getattr(splits.train, "x", splits.val.x)  # a streamed folder: its validation images
        models.fit_to_data(model, first[:WHITENING_IMAGES].to(procs.device))
    model = precision.model(model)
    optim = Optimisation.for_run(model, cfg, total_steps, precision)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optim.load(resume)
        if resume.get("rng"):  # one entry per rank of the run that wrote it
            checkpoint.restore_rng_states(resume["rng"][procs.rank % len(resume["rng"])], method.generator)
    lookahead = Lookahead(model, cfg.lookahead, total_steps) if cfg.lookahead else None
    if lookahead and resume is not None and "lookahead" in resume:
        lookahead.load_state_dict(resume["lookahead"])
    return method, model, optim, lookahead, weights


def _rng_states_of_every_rank(method: methods.Method, procs: Processes) -> list[dict]:
    """Every rank's generator states, for rank 0's checkpoint (ranks draw different noise)."""
    mine = checkpoint.rng_states(method.generator)
    if not procs.ddp:
        return [mine]
    gathered: list = [None] * procs.world
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def _one_batch(
    forward: nn.Module,
    method: methods.Method,
    optim: Optimisation,
    precision: Precision,
    x: torch.Tensor,
    y: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One optimiser step per entry of ``method.updates`` (MCD's fine-tuning: steps A then B)."""
    stats = {}
    for i in range(len(method.updates)):
        with precision.autocast():
            loss, more = forward(i, x, y)
        optim.step(loss)
        stats.update(more)
    optim.sched.step()
    return stats


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
def accuracy(
    model: nn.Module,
    split: datasets.Split,
    device: torch.device,
    precision: Precision | None = None,
    batch_size: int = 512,
) -> float:
    """Share of ``split`` classified right; in the run's precision when given (the per-epoch validation), else in
    fp32 (the final test accuracy, as the exported fp32 model computes it)."""
    model.eval()
    precision = precision or Precision(device.type, None)
    correct = 0
    for i in range(0, len(split), batch_size):
        x = precision.images(datasets.as_float(split.x[i : i + batch_size]).to(device))
        with precision.autocast():
            correct += (model(x).argmax(1).cpu() == split.y[i : i + batch_size]).sum().item()
    return correct / max(1, len(split))


def _check_ranks_in_sync(model: nn.Module, procs: Processes) -> None:
    """DDP keeps replicas identical only if every rank ran the same steps: verify it, cheaply."""
    flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    digest = torch.tensor(
        [flat.sum().item(), flat.square().sum().item(), flat[::97].sum().item()],
        dtype=torch.float64,
        device=next(model.parameters()).device,
    )
    gathered = [torch.zeros_like(digest) for _ in range(procs.world)]
    torch.distributed.all_gather(gathered, digest)
    if procs.main:
        same = all(torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered)
        print(f"ranks in sync: {same} (parameter digest {gathered[0].tolist()} on rank 0 of {procs.world})", flush=True)
        if not same:
            raise RuntimeError(f"DDP replicas diverged: digests {[g.tolist() for g in gathered]}")
