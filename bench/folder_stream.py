"""Does decoding keep up with training? A folder of 1,000 photos at 256-1,024 px, streamed by
``training.data.stream``, against the same images as an in-memory tensor, through the same network and step.

    python bench/folder_stream.py --data-root ../shared/data            # ~6 min on 2 cores

The photos are cut from the wallpapers and scikit-image's pictures (random crops, random sizes from 256 to 1,024 px on
the longer side, JPEG quality 90) into a temporary folder of 10 classes. Each variant trains EfficientNet-Lite0 at
64 px (batch 64, SGD, fp32 + channels_last) for ``--epochs`` epochs of the folder:

- ``memory``: the images, decoded once, as a uint8 tensor at 64 px; batches indexed from it (the baseline);
- ``stream, cache holds the folder``: the first epoch decodes every file, the next ones cut crops from the cache;
- ``stream, cache of 8 MiB``: most working images fall out: every epoch decodes most files again.

Printed: images/s per epoch and the ratio to the baseline, measured in the same run; the workers' private memory
(what each adds). Run it on a quiet machine (nothing else training): every figure is a ratio against the baseline.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.data import datasets, stream
from training.data.splits import DatasetInfo
from training.nets import models, pretrained

SIZE, BATCH, CLASSES = 64, 64, 10


def sources(data_root: Path) -> list[Image.Image]:
    import skimage.data

    pictures = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in ("astronaut", "chelsea", "coffee")]
    with zipfile.ZipFile(data_root / "wallpapers.zip") as z:
        for name in sorted(z.namelist()):
            if name.lower().endswith((".jpg", ".jpeg", ".png")):
                with Image.open(io.BytesIO(z.read(name))) as im:
                    im.draft("RGB", (1200, 1200))
                    pictures.append(im.convert("RGB"))
    return pictures


def write_folder(root: Path, pictures: list[Image.Image], n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        src = pictures[i % len(pictures)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = src.crop((left, top, left + cw, top + ch))
        longer = int(rng.integers(256, 1025))
        scale = longer / max(crop.size)
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.BILINEAR)
        folder = root / "train" / f"c{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / f"{i:04d}.jpg", quality=90)


def network() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    info = DatasetInfo("bench", tuple(f"c{i}" for i in range(CLASSES)), 3, SIZE, SIZE, (0.5,) * 3, (0.5,) * 3)
    model = models.build("efficientnet-lite0", info, lambda d, k: torch.nn.Linear(d, k))
    pretrained.load_weights(model.backbone, "efficientnet-lite0", None)
    model = model.to(memory_format=torch.channels_last).train()
    return model, torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)


def run(name: str, batches_of_epoch, labels: torch.Tensor, epochs: int, n: int) -> list[float]:
    """Images/s of each epoch: the same network and step, only where the images come from differs."""
    torch.manual_seed(0)
    model, opt = network()
    rates = []
    for epoch in range(epochs):
        idx = [torch.from_numpy(b) for b in np.array_split(np.random.default_rng(epoch).permutation(n), n // BATCH)]
        started = time.perf_counter()
        for i, x in zip(idx, batches_of_epoch(epoch, idx), strict=True):
            x = datasets.as_float(x).contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), labels[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rates.append(sum(len(i) for i in idx) / (time.perf_counter() - started))
        print(f"  {name}: epoch {epoch + 1} {rates[-1]:.1f} images/s", flush=True)
    return rates


def in_memory(images: torch.Tensor):
    return lambda epoch, idx: (images[i] for i in idx)


def worker_private_mib(streamed: stream.Streamed) -> float:
    """The largest worker's private memory (USS: pages no other process shares), MiB. Forked workers share the
    parent's pages; what each adds is its own decoded images and buffers."""
    largest = 0.0
    for pool in streamed.pools:
        for proc in pool._processes.values():  # the executor's own process table
            rollup = Path(f"/proc/{proc.pid}/smaps_rollup").read_text().splitlines()
            kib = sum(int(line.split()[1]) for line in rollup if line.startswith(("Private_Clean", "Private_Dirty")))
            largest = max(largest, kib / 1024)
    return largest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    p.add_argument("--photos", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        write_folder(root, sources(args.data_root), args.photos)
        listing = stream.Listing.of(root / "train")
        print(f"{len(listing.files)} photos written in {time.perf_counter() - t:.0f} s", flush=True)
        labels = torch.from_numpy(listing.labels)
        results = {}
        for name, cache_mb in (("stream, cache holds the folder", 1024), ("stream, cache of 8 MiB", 8)):
            streamed = stream.Streamed(listing, SIZE, seed=0, workers=args.workers, cache_mb=cache_mb)
            try:
                if "memory" not in results:  # the baseline's tensor: every photo decoded once, as served
                    results["memory"] = run(
                        "memory", in_memory(streamed.served(listing)), labels, args.epochs, len(labels)
                    )
                results[name] = run(name, streamed.batches, labels, args.epochs, len(labels))
                print(f"  workers' private memory: {worker_private_mib(streamed):.0f} MiB each at most", flush=True)
            finally:
                streamed.close()
    base = results["memory"]
    print(f"\nimages/s by epoch (EfficientNet-Lite0, {SIZE} px, batch {BATCH}, {args.workers} workers):")
    for name, rates in results.items():
        ratios = ", ".join(f"{r:.1f} ({r / b:.2f}x)" for r, b in zip(rates, base, strict=True))
        print(f"  {name:32s} {ratios}")


if __name__ == "__main__":
    main()
