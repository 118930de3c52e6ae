"""An image folder at its own size: ``imagefolder:PATH`` with ``--image-size N``, the training split streamed from disk.

A user's photos (256 px to several thousand) do not fit in memory as tensors, and squeezing them to 32 px throws
away what a pretrained network needs. So the training split stays on disk and worker processes decode each batch:

- **decode once, small**: a JPEG is decoded by libjpeg at the smallest scale still at least ``2N`` on its shorter
  side (``draft``), turned upright (EXIF), made RGB (transparency over white), and reduced to ``2N`` on its shorter
  side: the *working image*, from which every epoch's crop is cut. Twice the training size leaves a small random
  crop enough pixels.
- **a bounded cache per worker**: working images are kept, least recently used first out, up to ``cache_mb`` for
  all workers together; image ``i`` always goes to worker ``i % workers``, so no image is cached twice. A folder
  larger than the cache trains all the same, decoding what fell out; the batches are identical either way, because
  a cached working image is the very array a fresh decode gives.
- **the augmentation a fine-tune expects**, drawn per image from ``(seed, epoch, index)`` and not from a worker's
  state: a random resized crop (area 25-100 %, aspect 3:4-4:3, as torchvision's ``RandomResizedCrop``) stretched to
  N x N, and a horizontal flip with probability 1/2. So any number of workers, any cache size, and a resumed run all
  see the same pixels.

The validation and test splits are decoded whole into memory at N x N exactly as the service decodes an upload
(``modelfile.imagefolder.decode``, the whole image stretched): the threshold is calibrated on what will be served.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import torch

from . import decoding
from .splits import STREAMED_AUGMENT, DatasetInfo, DatasetUnavailable, Split, Splits

PREFETCH = 3  # batches decoded ahead of the one training


@dataclass(frozen=True)
class Listing:
    """The image files of ``PATH/<split>/<class>/...`` (sorted), their labels, and the sorted class names."""

    files: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]

    @classmethod
    def of(cls, folder: Path) -> Listing:
        from modelfile.imagefolder import image_files

        if not folder.is_dir():
            raise FileNotFoundError(f"imagefolder: expected {folder}/<class name>/<images>, found no such folder")
        files = [p for p in image_files(folder) if len(p.relative_to(folder).parts) >= 2]
        if not files:
            raise FileNotFoundError(f"imagefolder: no images in class folders under {folder}")
        classes = tuple(sorted({p.relative_to(folder).parts[0] for p in files}))
        labels = np.array([classes.index(p.relative_to(folder).parts[0]) for p in files], np.int64)
        return cls(tuple(map(str, files)), labels, classes)

    def subset(self, idx: np.ndarray) -> Listing:
        return Listing(tuple(self.files[i] for i in idx), self.labels[idx], self.classes)


class Streamed:
    """The training split of an image folder: labels in memory, pixels decoded by ``workers`` processes per batch.
    Quacks like ``Split`` where the loop needs it (``len``, ``y``); ``batches`` replaces indexing ``x``."""

    def __init__(self, listing: Listing, size: int, *, seed: int, workers: int = 2, cache_mb: int = 1024):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.listing, self.size, self.seed = listing, size, seed
        self.y = torch.from_numpy(listing.labels)
        budget = cache_mb * 2**20 // workers
        # fork where there is one (as torch's DataLoader): a spawned worker re-imports the main module, and with it
        # torch, ~700 MiB each; a forked one shares the parent's pages and runs only numpy and Pillow (no torch
        # thread pool is touched in it). The processes start with the first batch, before any logging thread.
        ctx = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
        self.pools = [
            ProcessPoolExecutor(1, mp_context=ctx, initializer=decoding.start_worker, initargs=(budget,))
            for _ in range(workers)
        ]

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, epoch: int, index_batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """uint8 [B, 3, N, N] for each batch of indices, in order, ``PREFETCH`` batches decoded ahead."""
        pending: list[list[tuple[Future, list[int]]]] = []
        for idx in index_batches:
            pending.append(self._submit(epoch, idx))
            if len(pending) > PREFETCH:
                yield self._gather(pending.pop(0))
        while pending:
            yield self._gather(pending.pop(0))

    def _submit(self, epoch: int, idx: torch.Tensor) -> list[tuple[Future, list[int]]]:
        """Image i of the batch goes to worker i % workers, whose cache holds it."""
        idx, w = idx.tolist(), len(self.pools)
        jobs = []
        for k, pool in enumerate(self.pools):
            positions = [p for p, i in enumerate(idx) if i % w == k]
            items = [(idx[p], self.listing.files[idx[p]]) for p in positions]
            jobs.append((pool.submit(decoding.crops, items, self.size, self.seed, epoch), positions))
        return jobs

    @staticmethod
    def _gather(jobs: list[tuple[Future, list[int]]]) -> torch.Tensor:
        n = sum(len(pos) for _, pos in jobs)
        out = None
        for future, positions in jobs:
            part = _result(future)
            if out is None:
                out = np.empty((n, *part.shape[1:]), np.uint8)
            out[positions] = part
        return torch.from_numpy(out)

    def served(self, listing: Listing, desc: str = "decoding") -> torch.Tensor:
        """``listing``'s images as the service will see them (validation, test), decoded by the workers; a progress
        bar where that takes a while."""
        from tqdm import tqdm

        chunks = np.array_split(np.arange(len(listing.files)), max(1, math.ceil(len(listing.files) / 64)))
        futures = [
            self.pools[k % len(self.pools)].submit(decoding.served, [listing.files[i] for i in chunk], self.size)
            for k, chunk in enumerate(chunks)
        ]
        # disable=None: no bar where stderr is no terminal (logs, CI)
        shown = tqdm(futures, desc=desc, unit="batch of 64", disable=True if len(futures) < 16 else None, leave=False)
        return torch.from_numpy(np.concatenate([_result(f) for f in shown]))

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """A seeded subset of ``n`` training images, decoded as served (int8 calibration)."""
        pick = np.sort(np.random.default_rng([seed, 8]).permutation(len(self))[:n])
        return self.served(self.listing.subset(pick))

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(cancel_futures=True)


def _result(future: Future) -> np.ndarray:
    """A worker's images; a file it could not read ends the run in one line naming it (``DatasetUnavailable``)."""
    try:
        return future.result()
    except decoding.UnreadableImage as e:
        raise DatasetUnavailable(f"imagefolder: {e}") from None


def folder_splits(path: Path, size: int, val_fraction: float, seed: int, workers: int, cache_mb: int) -> Splits:
    """PATH/train streamed at size x size; the validation part of it and PATH/test decoded into memory as the
    service decodes uploads (``training.data.stream``)."""
    try:
        listing, test_listing = Listing.of(path / "train"), Listing.of(path / "test")
    except FileNotFoundError as e:
        raise DatasetUnavailable(str(e)) from None
    if test_listing.classes != listing.classes:
        raise DatasetUnavailable(
            f"imagefolder: test classes {test_listing.classes} differ from train {listing.classes}"
        )
    n_val = round(len(listing.files) * val_fraction)
    perm = np.random.default_rng(seed).permutation(len(listing.files))
    train = Streamed(listing.subset(np.sort(perm[n_val:])), size, seed=seed, workers=workers, cache_mb=cache_mb)
    val_listing = listing.subset(np.sort(perm[:n_val]))
    try:
        val = Split(train.served(val_listing, "validation images"), torch.from_numpy(val_listing.labels))
        test = Split(train.served(test_listing, "test images"), torch.from_numpy(test_listing.labels))
    except BaseException:
        train.close()
        raise
    pixels = (val if len(val) else test).x.float().div(255)
    mean = tuple(pixels.mean((0, 2, 3)).tolist())
    std = tuple(pixels.std((0, 2, 3)).clamp_min(1e-3).tolist())
    info = DatasetInfo(f"imagefolder:{path}", listing.classes, 3, size, size, mean, std, augment=STREAMED_AUGMENT)
    return Splits(info, train, val, test)
