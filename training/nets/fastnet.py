"""A CIFAR-sized network built for accuracy per FLOP: the shape of airbench94 (Keller Jordan, arXiv 2404.00498).

    whitening 2x2 conv (frozen, from the training images) -> activation
    3 x [conv3x3 -> maxpool 2 -> BN -> act -> conv3x3 -> BN -> act]      widths 64/256/256 (wide: 128/384/384)
    maxpool 3 -> flatten -> x 1/9                                         the method's head takes it from here

What makes it learn fast, and where each piece lives:
- the first layer whitens 2x2 patches (``fit``): the eigenvectors of the training patches' second-moment matrix,
  scaled by 1/sqrt(eigenvalue + eps), and their negation, so the activation after it passes both signs. It is
  computed once from training images before the first step and never trained (its bias is).
- every later convolution starts as the identity on its first ``in_channels`` filters (dirac init);
- BatchNorm has no learned scale (it is fixed at 1), only a bias, which the recipe trains with a larger learning
  rate (``training.run.optim``); its eps is tiny and its running statistics move fast (momentum 0.4);
- features are scaled by 1/9 before the head, airbench's output scaling, so a linear head starts near-uniform.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

WIDTHS = {"fastnet": (64, 256, 256), "fastnet_wide": (128, 384, 384)}
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
WHITEN_EPS = 5e-4  # airbench's; added to each eigenvalue of the patch covariance before 1/sqrt


class WhiteningConv(nn.Conv2d):
    """2x2 patch whitening with both signs of each direction: 2 x C x 2 x 2 output channels, frozen weight."""

    def __init__(self, channels: int, patch: int = 2, eps: float = WHITEN_EPS):
        super().__init__(channels, 2 * channels * patch * patch, patch, bias=True)
        self.eps = eps
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the weight from (normalised) images [N, C, H, W]: eigen-directions of their patches, whitened."""
        c, (h, w) = images.shape[1], self.kernel_size
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1)  # N, C, H', W', h, w
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * h * w).double()
        second_moment = flat.T @ flat / len(flat)
        eigenvalues, eigenvectors = torch.linalg.eigh(second_moment)  # ascending
        directions = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + self.eps)[:, None]).flip(0)
        kernels = directions.reshape(c * h * w, c, h, w).float()
        self.weight.copy_(torch.cat([kernels, -kernels]))


class IdentityConv(nn.Conv2d):
    """3x3 'same' convolution without bias whose first in_channels filters start as the identity."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, padding=1, bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.dirac_(self.weight.data[: min(self.in_channels, self.out_channels)])


def scale_free_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm whose scale stays 1 (never trained) and whose bias learns."""
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int, activation: type[nn.Module]):
        super().__init__()
        self.conv1 = IdentityConv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = scale_free_norm(c_out)
        self.conv2 = IdentityConv(c_out, c_out)
        self.norm2 = scale_free_norm(c_out)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, channels: int, widths: Sequence[int], activation: str = "gelu", out_scale: float = 1 / 9):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.whiten = WhiteningConv(channels)
        self.act = act()
        groups, c = [], self.whiten.out_channels
        for w in widths:
            groups.append(ConvGroup(c, w, act))
            c = w
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)  # airbench's MaxPool2d(3) on its 3x3 map, for any input size
        self.out_scale = out_scale
        self.out_features = c

    def fit(self, images: torch.Tensor) -> None:
        """What the network learns from the training images before its first step: the whitening."""
        self.whiten.fit(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.pool(x).flatten(1) * self.out_scale


def build(arch: str, channels: int) -> FastNet:
    """``fastnet``, ``fastnet_wide``, each also as ``..._relu``."""
    return FastNet(channels, WIDTHS[arch.removesuffix("_relu")], "relu" if arch.endswith("_relu") else "gelu")


ARCHITECTURES = (*WIDTHS, *(f"{name}_relu" for name in WIDTHS))
