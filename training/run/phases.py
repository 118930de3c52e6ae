"""Which parts of a network train at each step: a fine-tune's schedule of freezing.

Fine-tuning a pretrained body with a fresh random head from the first step sends the head's large, random gradients
through the body and wrecks features that pre-training took weeks to learn (Kumar et al., ICLR 2022: fine-tuning
distorts pretrained features; a linear probe first, then fine-tuning, keeps them). So the first ``head_epochs``
train the head alone: the body's parameters are frozen (autograd then skips its backward pass too, so these epochs
cost a forward pass) and its BatchNorm layers keep their pretrained statistics. From then on the whole network
trains, the body at ``lr x body_lr_scale`` (``training.run.optim``). With ``bn="frozen"`` the body's BatchNorm
statistics stay the pretrained ones throughout: its affine parameters still train.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..config import TrainConfig


class Phases:
    def __init__(self, model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
        self.body = model.backbone
        # only what the body trains at all: fastnet's whitening and BatchNorm scales stay frozen whatever happens
        self.trainable = [p for p in self.body.parameters() if p.requires_grad]
        self.head_steps = round(cfg.head_epochs * steps_per_epoch)
        self.frozen_bn = cfg.bn == "frozen"
        self._head_only: bool | None = None

    def head_only(self, step: int) -> bool:
        return step < self.head_steps

    def train(self, model: nn.Module, step: int) -> None:
        """Put ``model`` in training mode as step ``step`` (0-based, about to be taken) trains it."""
        head_only = self.head_only(step)
        model.train()
        if head_only != self._head_only:
            for p in self.trainable:
                p.requires_grad_(not head_only)
            self._head_only = head_only
        if head_only or self.frozen_bn:
            for m in self.body.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()

    def entering_fine_tune(self, step: int) -> bool:
        """Whether step ``step`` is the first to train the body."""
        return self.head_steps > 0 and step == self.head_steps
