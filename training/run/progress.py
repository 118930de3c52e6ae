"""What rank 0 tells the user during a run: one line per epoch, a progress bar, TensorBoard scalars."""

from __future__ import annotations

import time
from pathlib import Path

from ..config import TrainConfig
from ..data import datasets


class EpochLog:
    def __init__(self, cfg: TrainConfig, procs, total_steps: int):
        from torch.utils.tensorboard import SummaryWriter

        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        self.cfg, self.procs, self.total_steps = cfg, procs, total_steps
        self.writer = SummaryWriter(str(out / "tb"))
        self.t0, self.seen, self.sums, self.done, self.bar = time.perf_counter(), 0, {}, 0, None

    def start(
        self, label: str, splits: datasets.Splits, resumed: dict | None, ckpt_path: Path, precision: str = "fp32"
    ) -> None:
        if resumed is not None:
            print(f"resuming {ckpt_path} after epoch {resumed['epoch'] + 1} (step {resumed['step']})", flush=True)
        elif self.cfg.resume:
            print(f"--resume: no checkpoint at {ckpt_path}, starting from scratch", flush=True)
        print(
            f"{label} {self.cfg.model} on {splits.info.name}: {len(splits.train)} train / {len(splits.val)} val / "
            f"{len(splits.test)} test images, {self.total_steps} steps on {self.procs.device} x{self.procs.world} "
            f"in {precision}" + (f", recipe {self.cfg.recipe}" if self.cfg.recipe else ""),
            flush=True,
        )

    def batch(self, epoch: int, epochs: int, n_steps: int, step: int, stats: dict, images: int, lr: float) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=n_steps,
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not self.cfg.progress,
                dynamic_ncols=True,
                leave=False,
            )
            self.sums, self.done = {}, 0
        self.seen += images
        self.done += 1
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.writer.add_scalar(f"train/{k}", float(v), step)
        self.writer.add_scalar("train/lr", lr, step)
        self.bar.update(1)
        rate = self.seen / max(1e-9, time.perf_counter() - self.t0)
        self.bar.set_postfix(
            {**{k: f"{v / self.done:.3f}" for k, v in self.sums.items()}, "img/s": f"{rate:.0f}"}, refresh=False
        )

    def epoch_end(self, epoch: int, epochs: int, step: int, val_acc: float, train_seconds: float) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.writer.add_scalar("val/acc", val_acc, step)
        rate = self.seen / (time.perf_counter() - self.t0)
        means = "  ".join(f"{k} {v / max(1, self.done):.4f}" for k, v in self.sums.items())
        print(
            f"epoch {epoch + 1}/{epochs}  step {step}  {means}  val_acc {val_acc:.4f}  {rate:.0f} img/s  "
            f"{train_seconds / 60:.1f} min",
            flush=True,
        )

    def finish(self, test_acc: float, n_test: int, ckpt_path: Path, train_seconds: float) -> None:
        self.writer.close()
        print(
            f"done: test accuracy {test_acc:.4f} (error {100 * (1 - test_acc):.2f} %) on {n_test} images after "
            f"{train_seconds / 60:.1f} min of training; checkpoint {ckpt_path}",
            flush=True,
        )
