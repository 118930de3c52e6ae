"""The optimiser and learning-rate schedule of a run, from its config: SGD (momentum, optionally Nesterov) with

- ``step``: the paper's schedule, the learning rate divided by 10 at each milestone (shares of all steps);
- ``triangle``: a linear warm-up from lr x lr_start to lr over the first ``warmup`` share of the steps, then a
  linear decay to lr x lr_end at the last step (airbench's, for short runs on large batches).

BatchNorm biases may train at ``bias_lr_scale`` times the learning rate (airbench: 64x; its BatchNorm has no
scale, so the bias is the layer's one knob), with their weight decay divided by the same factor so that the decay
each step applies, lr x weight_decay, is the same for every parameter. A pretrained body trains at
``body_lr_scale`` times the head's learning rate (``training.run.phases``). Frozen parameters (fastnet's whitening
weights, its BatchNorm scales) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import TrainConfig
from .precision import Precision

SCHEDULES = ("step", "triangle")


def triangle(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The triangle schedule's learning rate at ``step`` (0-based, the step about to be taken), as a multiple of
    ``cfg.lr``."""
    rise = int(cfg.warmup * total_steps)
    if step < rise:
        return cfg.lr_start + (1 - cfg.lr_start) * step / rise
    return 1 + (cfg.lr_end - 1) * (step - rise) / max(1, total_steps - rise)


def schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.lr_schedule == "step":  # MultiStepLR itself: checkpoints that stored one resume into it
        milestones = sorted({int(f * total_steps) for f in cfg.lr_milestones})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    if cfg.lr_schedule == "triangle":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: triangle(cfg, step, total_steps))
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; choose one of {', '.join(SCHEDULES)}")


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The parameters that train, grouped by learning rate: a pretrained body's at ``body_lr_scale`` (its head at
    lr), BatchNorm biases at ``bias_lr_scale``. Groups in a fixed order, so a resumed optimiser's state fits."""
    norm_biases = {
        id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None
    }
    body = {id(p) for p in model.backbone.parameters()} if cfg.body_lr_scale != 1.0 else set()
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in body, cfg.bias_lr_scale != 1.0 and id(p) in norm_biases), []).append(p)
    out = []
    for in_body, norm_bias in sorted(groups):
        group = {"params": groups[in_body, norm_bias]}
        scale = (cfg.body_lr_scale if in_body else 1.0) * (cfg.bias_lr_scale if norm_bias else 1.0)
        if scale != 1.0:
            group["lr"] = cfg.lr * scale
        if norm_bias:
            group["weight_decay"] = cfg.weight_decay / cfg.bias_lr_scale
        out.append(group)
    return out


@dataclass
class Optimisation:
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    @classmethod
    def for_run(cls, model: nn.Module, cfg: TrainConfig, total_steps: int, precision: Precision) -> Optimisation:
        opt = torch.optim.SGD(
            param_groups(model, cfg),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )
        return cls(opt, schedule(opt, cfg, total_steps), torch.amp.GradScaler("cuda", enabled=precision.needs_scaler))

    def state(self) -> dict:
        return {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load(self, ckpt: dict) -> None:
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
