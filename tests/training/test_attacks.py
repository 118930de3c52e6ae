"""PGD leaves every module in the mode it found it in: a network in eval mode stays in eval mode even when
the attack differentiates a wrapper built for it (which nn.Module creates in training mode)."""

from __future__ import annotations

import torch
from torch import nn

from training.data.datasets import DatasetInfo
from training.methods.attacks import max_log_confidence, pgd
from training.nets.models import build


class Wrapper(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_pgd_through_a_wrapper_keeps_the_network_in_eval_mode():
    torch.manual_seed(0)
    info = DatasetInfo("rgb", tuple("abcdefghij"), 3, 32, 32, (0.5,) * 3, (0.25,) * 3)
    net = build("resnet_small", info, lambda d, k: nn.Linear(d, k)).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    wrapper = Wrapper(net)
    assert wrapper.training and not net.training
    pgd(wrapper, x, max_log_confidence, eps=0.1, steps=2, step_size=0.1)
    assert wrapper.training, "the wrapper's own mode is restored"
    assert not any(m.training for m in net.modules()), "the network is back in eval mode"
    with torch.no_grad():
        assert torch.equal(net(x), before)  # BatchNorm running statistics untouched, eval statistics used
