"""One training run, as plain data: what the CLI builds, the loop runs and the checkpoint stores."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    dataset: str = "svhn"
    data_root: str = "data"
    model: str = "resnet_small"
    method: dict = field(default_factory=lambda: {"name": "plain"})  # a method spec (training.methods.api)
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
    export: str | None = None  # the CLI exports the final checkpoint here once training is done
    init_from: str | None = None
    progress: bool = True
