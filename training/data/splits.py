"""What every data set is made of, apart from where it comes from: its description (``DatasetInfo``), its splits
as uint8 tensors (``Split``, ``Splits``), and the two conversions every reader of images shares. Its own module so
that the in-memory data sets (``datasets``) and the streamed image folders (``stream``) both build on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


class DatasetUnavailable(RuntimeError):
    """The data is not on disk and could not be downloaded; the message says what to put where."""


STREAMED_AUGMENT = "resized_crop_flip"  # done by the decoding workers (training.data.stream); cutout still applies


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"  # "none" | "crop" | "crop_flip" | STREAMED_AUGMENT

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def color_mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DatasetInfo:
        return cls(**{**d, "classes": tuple(d["classes"]), "mean": tuple(d["mean"]), "std": tuple(d["std"])})


@dataclass
class Split:
    """Images as uint8 [N, C, H, W] (or float [N, D] for 2-D toy data) and int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray | torch.Tensor) -> Split:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Split(self.x[idx], self.y[idx])


@dataclass
class Splits:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]; float data passes through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def to_shape(x: torch.Tensor, channels: int, height: int, width: int, *, gray: bool = False) -> torch.Tensor:
    """uint8 or float images -> float32 [N, channels, height, width] in [0, 1]: RGB -> gray by the ITU-R 601
    luma weights (PIL's "L"), gray -> RGB by repetition, sizes by antialiased bilinear resampling.
    ``gray`` makes RGB images gray first, whatever ``channels`` is."""
    x = as_float(x)
    if x.shape[1] == 3 and (gray or channels == 1):
        x = (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[2:]) != (height, width):
        x = torch.nn.functional.interpolate(
            x, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )
    return x.clamp(0.0, 1.0).contiguous()
