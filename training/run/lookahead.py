"""Lookahead on the weights, airbench's form: every ``every`` steps a slow copy moves toward the network and the
network is set to the slow copy; at the last step the network becomes the slow copy.

The slow copy's pull grows as training ends, ``decay = 0.95**5 x (step / total)**3``: nothing early, when the
weights must move, and an average over the last hundred steps or so at the end, when the linear decay has made the
steps small and noisy. It covers every floating-point entry of the state dict, BatchNorm's running statistics
included, so the averaged weights are used with statistics averaged alike. Its state goes into the checkpoint: a
resumed run continues it bit-exact.
"""

from __future__ import annotations

import torch
from torch import nn


class Lookahead:
    def __init__(self, model: nn.Module, every: int, total_steps: int):
        self.every, self.total = every, total_steps
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay(self, step: int) -> float:
        return 0.95**5 * (step / self.total) ** 3

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        """Call after optimiser step number ``step`` (1-based)."""
        if step % self.every == 0:
            self._pull(model, self.decay(step))
        if step == self.total:
            self._pull(model, 1.0)

    def _pull(self, model: nn.Module, decay: float) -> None:
        for k, v in model.state_dict().items():
            if k in self.slow:
                self.slow[k].lerp_(v, 1 - decay)
                v.copy_(self.slow[k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.slow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.slow[k].copy_(v)
