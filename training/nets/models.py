"""Architectures: a normalising first layer, a feature extractor, and a swappable head.

``Classifier.features(x)`` gives the penultimate representation and ``Classifier.head`` maps it to
logits, so a method can replace the head (IsoMax+ prototypes, MCD's two heads) without touching
the backbone. Inputs are always [0, 1]; the per-dataset mean/std lives in the model, so an exported
model takes raw [0, 1] images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..config import is_pretrained
from ..data.datasets import as_float
from . import fastnet, pretrained

ARCHITECTURES = ("lenet", "resnet_small", "resnet18", "mlp", *fastnet.ARCHITECTURES)


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # 2-D toy data: one "channel" per coordinate
            return (x - self.mean.view(1, -1)) / self.std.view(1, -1)
        return (x - self.mean) / self.std


class LeNet(nn.Module):
    """conv5x5-32, pool, conv5x5-64, pool, fc1024 (the MNIST net of the ACET paper)."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc = nn.Linear(64 * (height // 4) * (width // 4), 1024)
        self.out_features = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc(x.flatten(1)))


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet for 32x32 inputs: stages of ``units`` blocks with ``widths`` filters."""

    def __init__(self, channels: int, widths: Sequence[int], units: Sequence[int], stem: int):
        super().__init__()
        self.stem = nn.Conv2d(channels, stem, 3, 1, 1, bias=False)
        blocks, c = [], stem
        for i, (w, n) in enumerate(zip(widths, units, strict=True)):
            for j in range(n):
                blocks.append(PreActBlock(c, w, 2 if (j == 0 and i > 0) else 1))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.out_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return x.mean((2, 3))


class MLP(nn.Module):
    """The 2-D toy net: a few ReLU layers."""

    def __init__(self, in_features: int, hidden: int = 100, depth: int = 3):
        super().__init__()
        layers, d = [], in_features
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.net = nn.Sequential(*layers)
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def backbone(arch: str, channels: int, height: int, width: int) -> nn.Module:
    if arch == "lenet":
        return LeNet(channels, height, width)
    if arch == "resnet_small":  # the ACET paper's CIFAR/SVHN net: 3 stages x 3 units, 16/32/64
        return PreActResNet(channels, (16, 32, 64), (3, 3, 3), stem=16)
    if arch == "resnet18":
        return PreActResNet(channels, (64, 128, 256, 512), (2, 2, 2, 2), stem=64)
    if arch == "mlp":
        return MLP(channels)
    if arch in fastnet.ARCHITECTURES:
        return fastnet.build(arch, channels)
    raise ValueError(f"unknown model {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


class Classifier(nn.Module):
    def __init__(self, normalize: Normalize, features: nn.Module, head: nn.Module):
        super().__init__()
        self.normalize = normalize
        self.backbone = features
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor, **head_options) -> torch.Tensor:
        """Logits; ``head_options`` go to the head (MCD's two heads: which heads, which see detached features)."""
        return self.head(self.features(x), **head_options)


def fit_to_data(model: Classifier, images: torch.Tensor) -> None:
    """Before the first step, the layers whose initial weights come from training images (uint8 or [0, 1]):
    fastnet's whitening. A no-op for the other networks."""
    fit = getattr(model.backbone, "fit", None)
    if fit is not None:
        with torch.no_grad():
            fit(model.normalize(as_float(images)))


def build(arch: str, info, make_head: Callable[[int, int], nn.Module]) -> Classifier:
    """A classifier for a data set (``training.data.datasets.DatasetInfo``) with the method's head. A pretrained
    network (``training.nets.pretrained``) is normalised as its weights expect, not by the data set's statistics,
    and comes with random weights: ``pretrained.load_weights`` fills a fresh run's."""
    if is_pretrained(arch):
        body = pretrained.body(arch, info.height)
        normalize = Normalize(body.mean, body.std)
    else:
        body = backbone(arch, info.channels, info.height, info.width)
        normalize = Normalize(info.mean, info.std)
    return Classifier(normalize, body, make_head(body.out_features, info.num_classes))
