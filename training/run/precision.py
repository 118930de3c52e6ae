"""Mixed precision for training (``--amp``), on whichever device trains: one decision, made once per run.

- CUDA: bf16 autocast where the GPU has it, else fp16 with a gradient scaler.
- CPU: bf16 autocast with channels_last tensors where the CPU computes bf16 natively (AVX-512 BF16 or AMX, as
  oneDNN reports it): on this project's 2-core EPYC that is 3-4x the fp32 step for the convolutional networks.
  A CPU without it would emulate bf16 more slowly than fp32, so the run falls back to fp32 (channels_last kept:
  it pays in fp32 as well) and says so once.

Weights, optimiser state and checkpoints stay fp32 (autocast casts per operation), so the exported model is fp32
whatever the run trained in.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


def cpu_has_native_bf16() -> bool:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and torch.backends.mkldnn.is_available() and check())


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype | None  # None: fp32 throughout
    channels_last: bool = False

    @classmethod
    def for_run(cls, device: torch.device, amp: bool, *, say=print) -> Precision:
        if not amp:
            return cls(device.type, None)
        if device.type == "cuda":
            return cls("cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        if cpu_has_native_bf16():
            return cls("cpu", torch.bfloat16, channels_last=True)
        say(
            "--amp: this CPU has no native bf16 (AVX-512 BF16 / AMX), which would be slower than fp32: training in "
            "fp32, channels_last"
        )
        # channels_last alone pays in fp32 too: EfficientNet-Lite0 at 64 px, 93 -> 189 images/s on 2 AVX2 cores
        return cls(device.type, None, channels_last=device.type == "cpu")

    @property
    def name(self) -> str:
        return "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x
