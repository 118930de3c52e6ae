"""Out-of-distribution sets by name, brought to a model's input shape.

Real data sets are read from their test splits without downloading; noise sets are drawn with a
seed derived from the set's name, so adding a set never changes another and every model in a
side-by-side comparison sees the same images. The adversarial sets (``adv-noise``, ``adv-samples``)
depend on the model and are built in ``training.evaluation.evaluate``.

Names:
  mnist, fashion-mnist, cifar10, cifar100, svhn  the data set's test split (under --data-root)
  imagefolder:PATH                                images under PATH/test (or PATH) — a folder or a .zip
  NAME-gray                                       any of the above converted to gray (e.g. cifar10-gray)
  uniform                                         U[0, 1] pixels (raw: not training.data.noise's blurred-uniform)
  permuted                                        in-distribution test images, pixels shuffled (raw, likewise)
  noise                                           CEDA/ACET's training noise (blurred-uniform + blurred-permuted)
  scaled-noise                                    alpha x U[0, 1] for each alpha (outside [0, 1] on purpose)
  photos                                          square crops of scikit-image's bundled photos (offline)
  textures                                        small square crops of scikit-image's bundled texture photos
                                                  (brick, grass, gravel, stained tissue), offline
  outliers:PATH[#GROUP+GROUP]                     random crops of the images in a folder or zip (of the named
                                                  first folders only), cut as outlier exposure cuts them
                                                  (training.data.outliers): e.g. the held-out wallpaper packages.
                                                  A relative PATH not found here is looked for under --data-root.

Conversions: RGB -> gray with the ITU-R 601 luma weights (PIL's "L"), gray -> RGB by repetition,
sizes by antialiased bilinear resampling (CIFAR's 32x32 -> MNIST's 28x28).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import datasets, imagefiles
from ..data.noise import noise_batch, permute_pixels
from ..data.outliers import OutlierImages

NOISE_SETS = ("uniform", "permuted", "noise")
ADVERSARIAL_SETS = ("adv-noise", "adv-samples")
SCALED = "scaled-noise"
ALPHAS = (1.0, 10.0, 100.0, 1000.0)
PHOTOS = "photos"
# scikit-image's bundled photos (no download): natural images, far from digits and clothes alike. Fixed
# before any result was seen; training code never reads them (docs/mcd.md uses others as unlabelled data).
PHOTO_NAMES = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "moon",
    "page",
    "text",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "clock",
    "hubble_deep_field",
)
TEXTURES = "textures"
# scikit-image's bundled texture photos (512 x 512; brick, grass and gravel are gray, the stain is colour), cropped
# at 32-128 px sides: patches with no object in them, the natural images nearest to noise. Fixed before any
# result was seen; no training code reads them.
TEXTURE_NAMES = ("brick", "grass", "gravel", "immunohistochemistry")
TEXTURE_SIDES = (32, 128)


@dataclass(frozen=True)
class InputShape:
    channels: int
    height: int
    width: int


def set_seed(name: str, seed: int) -> int:
    """A per-set seed that depends only on the set's name and the run's seed."""
    return (zlib.crc32(name.encode()) + 7919 * seed) % (2**31)


def is_dataset(name: str) -> bool:
    base = name.removesuffix("-gray")
    return base in datasets.TORCHVISION or base.startswith("imagefolder:")


OUTLIERS = "outliers:"


def known(name: str) -> bool:
    return (
        is_dataset(name)
        or name in NOISE_SETS
        or name in ADVERSARIAL_SETS
        or name in (SCALED, PHOTOS, TEXTURES)
        or name.startswith(OUTLIERS)
    )


def outlier_set(path: str | Path, groups: tuple[str, ...]) -> str:
    """The set name of crops of ``groups`` of the outlier images at ``path`` (all of them when empty)."""
    return f"{OUTLIERS}{path}" + (f"#{'+'.join(groups)}" if groups else "")  # '+': --ood is comma-separated


def outlier_crops(name: str, shape: InputShape, n: int, seed: int, data_root: str | Path = ".") -> torch.Tensor:
    """``outliers:PATH[#GROUPS]``: n seeded crops, as training.data.outliers cuts them."""
    path, _, groups = name.removeprefix(OUTLIERS).partition("#")
    if not Path(path).exists() and not Path(path).is_absolute():
        path = Path(data_root) / path
    try:
        images = OutlierImages.read(path, only=tuple(g for g in groups.split("+") if g))
    except imagefiles.NoImages as e:
        raise datasets.DatasetUnavailable(f"OOD set {name!r}: {e}") from None
    g = torch.Generator().manual_seed(set_seed(name.rpartition("/")[2], seed))
    return images.crops(n, (shape.channels, shape.height, shape.width), g)


# ----------------------------------------------------------------------------------------------- real data


def labelled_test(
    name: str, data_root: str | Path, n: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A data set's test split as uint8 [N, C, H, W] images and int64 labels, never downloading.

    ``n`` draws a seeded subset (only those images are decoded when they come from a folder or zip).
    """
    root = Path(data_root)
    if name.startswith("imagefolder:"):
        return _image_files(Path(name.split(":", 1)[1]), n, seed)
    if name == "mnist":
        x, y = datasets.mnist_t10k(root)
        idx = imagefiles.subsample(len(y), n, seed)
        return torch.from_numpy(x[idx].copy()).unsqueeze(1), torch.from_numpy(y[idx].copy())
    if name == "cifar10" and (files := datasets.cifar10_files(root)):
        return _image_files(files, n, seed)
    if name not in datasets.TORCHVISION:
        raise ValueError(
            f"unknown data set {name!r}: choose one of {', '.join(datasets.TORCHVISION)} or imagefolder:PATH"
        )
    test, _ = datasets.torchvision_split(name, root, "test")  # never downloading: evaluation reads what is there
    idx = torch.from_numpy(imagefiles.subsample(len(test), n, seed))
    return test.x[idx], test.y[idx]


def _image_files(path: Path, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images under ``path/test`` (or ``path``), a folder or a zip; label = the parent folder's name."""
    try:
        x, y, _ = imagefiles.read(path, "test", n=n, seed=seed)
    except imagefiles.NoImages as e:
        raise datasets.DatasetUnavailable(f"imagefolder: {e}") from None
    return x, y


def to_model_shape(x: torch.Tensor, shape: InputShape, *, gray: bool = False) -> torch.Tensor:
    """uint8 or float images -> float32 [N, C, H, W] at the model's shape (values kept in [0, 1])."""
    return datasets.to_shape(x, shape.channels, shape.height, shape.width, gray=gray)


# ----------------------------------------------------------------------------------------------- noise


def noise_set(name: str, shape: InputShape, id_images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``uniform``, ``permuted`` or ``noise`` (see the module docstring) as float [n, C, H, W]."""
    g = torch.Generator().manual_seed(set_seed(name, seed))
    if name == "uniform":
        return torch.rand(n, shape.channels, shape.height, shape.width, generator=g)
    pick = (
        torch.randint(0, len(id_images), (n,), generator=g)
        if n > len(id_images)
        else torch.randperm(len(id_images), generator=g)[:n]
    )
    base = to_model_shape(id_images[pick], shape)
    if name == "permuted":
        return permute_pixels(base, g)
    if name == "noise":
        return noise_batch(base, n, g)
    raise ValueError(f"unknown noise set {name!r}")


def scaled_noise(shape: InputShape, n: int, seed: int, alphas: tuple[float, ...] = ALPHAS) -> dict[str, torch.Tensor]:
    """alpha x U[0, 1] noise for each alpha, the same base images for every alpha (Theorem 3.1's check)."""
    g = torch.Generator().manual_seed(set_seed(SCALED, seed))
    base = torch.rand(n, shape.channels, shape.height, shape.width, generator=g)
    return {scaled_name(a): base * a for a in alphas}


def photo_crops(shape: InputShape, n: int, seed: int) -> torch.Tensor:
    """``photos``: n square crops (sides from 28 px to the photo's short side, evenly spread over
    ``PHOTO_NAMES``) at the model's shape, as float [n, C, H, W]."""
    return _skimage_crops(PHOTOS, PHOTO_NAMES, (28, None), shape, n, seed)


def texture_crops(shape: InputShape, n: int, seed: int) -> torch.Tensor:
    """``textures``: n square crops (sides ``TEXTURE_SIDES``, evenly spread over ``TEXTURE_NAMES``) at the
    model's shape, as float [n, C, H, W]."""
    return _skimage_crops(TEXTURES, TEXTURE_NAMES, TEXTURE_SIDES, shape, n, seed)


def _skimage_crops(
    set_name: str, names: tuple[str, ...], sides: tuple[int, int | None], shape: InputShape, n: int, seed: int
) -> torch.Tensor:
    try:
        import skimage.data
    except ImportError:
        raise ValueError(f"the '{set_name}' set needs scikit-image (pip install scikit-image)") from None
    from PIL import Image

    rng = np.random.default_rng(set_seed(set_name, seed))
    crops = []
    for i, name in enumerate(names):
        im = Image.fromarray(getattr(skimage.data, name)()).convert("L" if shape.channels == 1 else "RGB")
        count = n // len(names) + (i < n % len(names))
        crops += [np.asarray(c) for c in square_crops(im, count, rng, (shape.width, shape.height), sides)]
    x = torch.from_numpy(np.stack(crops))
    return to_model_shape(x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2), shape)


def square_crops(
    image, count: int, rng: np.random.Generator, size: tuple[int, int], sides: tuple[int, int | None] = (28, None)
) -> list:
    """``count`` random square crops of a PIL image, sides from ``sides[0]`` px to ``sides[1]`` (None: the image's
    short side), resized to ``size``: every scale from a texture patch to the whole scene by default."""
    from PIL import Image

    w, h = image.size
    top = min(w, h) if sides[1] is None else min(w, h, sides[1])
    crops = []
    for _ in range(count):
        side = int(rng.integers(sides[0], top + 1))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crops.append(image.crop((x0, y0, x0 + side, y0 + side)).resize(size, Image.BILINEAR))
    return crops


def scaled_name(alpha: float) -> str:
    return f"{SCALED} x{alpha:g}"


def build(
    name: str,
    shape: InputShape,
    *,
    id_images: torch.Tensor,
    data_root: str | Path,
    n: int,
    seed: int,
    alphas: tuple[float, ...] = ALPHAS,
) -> dict[str, torch.Tensor]:
    """Named OOD set(s) (``scaled-noise`` gives one per alpha) as float images at the model's shape."""
    if is_dataset(name):
        gray = name.endswith("-gray")
        x, _ = labelled_test(name.removesuffix("-gray"), data_root, n, set_seed(name, seed))
        return {name: to_model_shape(x, shape, gray=gray)}
    if name in NOISE_SETS:
        return {name: noise_set(name, shape, id_images, n, seed)}
    if name == SCALED:
        return scaled_noise(shape, n, seed, alphas)
    if name == PHOTOS:
        return {name: photo_crops(shape, n, seed)}
    if name == TEXTURES:
        return {name: texture_crops(shape, n, seed)}
    if name.startswith(OUTLIERS):
        return {name: outlier_crops(name, shape, n, seed, data_root)}
    raise ValueError(f"{name!r} is not a fixed OOD set (adversarial sets are built per model)")
