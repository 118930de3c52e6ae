"""A folder of the user's images -> the model's input, decoded the way the service decodes an upload.

A threshold set on these images holds for what the service feeds the model only if both see the same pixels,
so both take the steps of ``modelfile/pixels.py``: the first frame, JPEGs decoded at the smallest libjpeg scale
still as large as the input, box-reduced by whole factors while twice the input size remains, EXIF
orientation, transparency over white, 16-bit and float images scaled to [0, 1], ``InputSpec.resize`` with
bilinear resampling. What the service does to guard a server against hostile
uploads (memory budgets, slices, deadlines) is left out: these are the user's own files.
``tests/modelfile/test_recalibrate.py`` checks that both give the same arrays.

One difference is deliberate: an image of the other colour kind (an RGB photo for a grayscale model, or the
reverse) is refused rather than converted. The service converts it, but a calibration folder of the other
kind is a wrong folder, and a threshold set on it would describe images the site does not send.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import pixels
from .schema import InputSpec

SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")  # pixels.FORMATS' file names


class RefusedImages(ValueError):
    """The folder cannot calibrate this model; the message is one line naming the file or the folder."""


def image_files(folder: Path) -> list[Path]:
    """The image files below ``folder`` (class sub-folders included), sorted, hidden files left out."""
    if not folder.is_dir():
        raise RefusedImages(f"{folder}: no such folder")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_images(files: list[Path], spec: InputSpec, folder: Path) -> np.ndarray:
    """float32 ``[N, C, H, W]`` in [0, 1], or ``RefusedImages`` naming the first file that cannot be used."""
    from PIL import Image

    out = np.empty((len(files), spec.channels, spec.height, spec.width), np.float32)
    for i, path in enumerate(files):
        shown = path.relative_to(folder.parent)
        try:
            with Image.open(path, formats=pixels.FORMATS) as im:
                kind = colour_kind(im)
                if kind != spec.color_mode:
                    raise RefusedImages(
                        f"{shown} is a {_KIND_WORDS[kind]} image ({im.mode}); the model takes "
                        f"{_KIND_WORDS[spec.color_mode]} ({spec.color_mode}) images"
                    )
                out[i] = decode(im, spec)
            if not np.isfinite(out[i]).all():
                raise RefusedImages(f"{shown} has pixel values that are NaN or infinite")
        except RefusedImages:
            raise
        except Exception as e:  # Pillow raises many types for a file that is not a readable image
            raise RefusedImages(f"{shown}: not a readable image ({' '.join(str(e).split())})") from None
    return out


_KIND_WORDS = {"L": "grayscale", "RGB": "colour"}


def colour_kind(im) -> str:
    """ "L" or "RGB": which of the model's colour modes the image is (a palette image by its palette)."""
    from PIL import Image

    if im.mode in ("P", "PA"):
        palette = np.asarray(im.getpalette("RGB") or [0, 0, 0], np.uint8).reshape(-1, 3)
        return "L" if (palette == palette[:, :1]).all() else "RGB"
    return Image.getmodebase(im.mode)


def decode(im, spec: InputSpec) -> np.ndarray:
    """One opened image -> float32 ``[C, H, W]``, step for step as ``service.pipeline.imaging.decode``."""
    if im.format == "JPEG":
        im.draft(None, (max(spec.width, spec.height),) * 2)
    im.load()
    return pixels.to_array(pixels.to_input(im, spec, _reduce), spec)


def _reduce(im, spec: InputSpec, swapped: bool):
    """The service's whole-factor box reduction, at once (it works in slices: the same pixels)."""
    factors, mode = pixels.reduction(im.size, spec, swapped), pixels.reduce_mode(im)
    if factors == (1, 1) and mode == im.mode:
        return im
    reduced = im.convert(mode) if mode != im.mode else im
    reduced = reduced.reduce(factors) if factors != (1, 1) else reduced
    if "transparency" in im.info and mode == im.mode:
        reduced.info["transparency"] = im.info["transparency"]
    return reduced
