"""Does channels_last pay in fp32? One SGD step of EfficientNet-Lite0 at 64 px (batch 64, 2 threads), NCHW against
channels_last, on this CPU: the reason ``training.run.precision`` keeps channels_last where it falls back to fp32.

    python bench/channels_last.py        # ~1 min
"""

from __future__ import annotations

import time

import torch

from training.nets import pretrained


def images_per_second(channels_last: bool, size: int = 64, batch: int = 64, steps: int = 4) -> float:
    branch, spec = pretrained.load("efficientnet-lite0", input_size=size)
    net = torch.nn.Sequential(branch, torch.nn.Linear(spec.feature_dim, 10)).train()
    x, y = torch.rand(batch, 3, size, size), torch.randint(0, 10, (batch,))
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)
    for i in range(steps + 1):
        if i == 1:  # the first step allocates and picks kernels
            started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - started)


if __name__ == "__main__":
    torch.set_num_threads(2)
    nchw, last = images_per_second(False), images_per_second(True)
    print(f"NCHW {nchw:.1f} images/s, channels_last {last:.1f} images/s ({last / nchw:.2f}x)")
