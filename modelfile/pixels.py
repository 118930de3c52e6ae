"""How a decoded image becomes the model's input: the metadata's ``input`` (``color_mode``, ``resize``, size)
as code. The service's decoder (``service/pipeline/imaging.py``, which adds the guards a server needs against hostile
uploads) and recalibration's folder reader (``modelfile/imagefolder.py``) both bring images to the model
through these steps, so a threshold recalibrated on a folder describes what the service feeds the model.

Imports Pillow: ``import modelfile`` does not import this module.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageCms

from .schema import InputSpec

# Formats a client may send. Pillow can open many more, some through external programs (EPS runs
# Ghostscript); a classifier service has no reason to offer that attack surface.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")

# Transparent pixels are composited over white: the usual page background, and what a viewer shows.
MATTE = (255, 255, 255, 255)
# Letterbox bars are black (0), the background of the bundled models' training images.
BARS = 0
# 16-bit images are scaled by the full 16-bit range; float images are taken as already in [0, 1].
INTEGER_FULL_SCALE = 65535.0
# Whole-factor box reduction runs while this many times the final size remains: box averaging is
# cheap and exact, and the last bilinear step then sees enough pixels to look like a direct resize.
REDUCING_GAP = 2
# EXIF orientation -> the transpose that displays the image upright (as ImageOps.exif_transpose).
ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_SIDES = {5, 6, 7, 8}
# Modes ``Image.reduce`` does not take (or would average wrongly), and the mode they are reduced in.
_CONVERT_BEFORE_REDUCE = {"1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}


def to_input(
    im: Image.Image, spec: InputSpec, reduce: Callable[[Image.Image, InputSpec, bool], Image.Image]
) -> Image.Image:
    """A loaded image brought to ``spec``: upright (EXIF), reduced by ``reduce`` (whole factors from
    ``reduction``, as the caller can afford them), in the model's colour mode, resized."""
    turn = orientation(im)
    im = reduce(im, spec, turn in SWAPS_SIDES)
    if turn in ORIENTATION:
        im = im.transpose(ORIENTATION[turn])
    return resize(to_color_mode(im, spec.color_mode), spec)


def orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block: show the image as stored
        return 1


def content_size(size: tuple[int, int], spec: InputSpec) -> tuple[float, float]:
    """How large the image's content ends up in the model input, in (possibly fractional) pixels."""
    w, h = size
    if spec.resize == "stretch":
        return spec.width, spec.height
    scale = (min if spec.resize == "letterbox" else max)(spec.width / w, spec.height / h)
    return w * scale, h * scale


def reduction(size: tuple[int, int], spec: InputSpec, swapped: bool) -> tuple[int, int]:
    """The whole factors (x, y) an image of ``size`` (as stored; ``swapped``: displayed on its side) is
    box-reduced by before the final resize."""
    w, h = size
    cw, ch = content_size((h, w) if swapped else (w, h), spec)
    if swapped:
        cw, ch = ch, cw
    return max(1, int(w // (REDUCING_GAP * cw))), max(1, int(h // (REDUCING_GAP * ch)))


def reduce_mode(im: Image.Image) -> str:
    """The mode the image is reduced in: its own where ``Image.reduce`` takes it and keeps its meaning."""
    if im.mode in _CONVERT_BEFORE_REDUCE:
        return _CONVERT_BEFORE_REDUCE[im.mode]
    if im.mode == "P" or "transparency" in im.info:  # palette indices and colour keys do not average
        return "RGBA" if "transparency" in im.info else "RGB"
    return im.mode


def to_color_mode(im: Image.Image, color_mode: str) -> Image.Image:
    """Convert to ``color_mode`` ("L" or "RGB"), or to "F" in [0, 1] for integer and float images."""
    if im.mode in ("I", "F"):
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them; scale by hand.
        # Channels are replicated after resizing. The image is small here (after the reduction).
        scale = INTEGER_FULL_SCALE if im.mode == "I" else 1.0
        return Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) / scale, 0.0, 1.0))
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, MATTE), im.convert("RGBA"))
    elif im.mode == "LAB":
        # Pillow's convert() copies LAB's bands as if they were RGB; littlecms converts the colours.
        im = ImageCms.applyTransform(im, _lab_to_srgb())
    return im.convert(color_mode)


def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    return ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")


def resize(im: Image.Image, spec: InputSpec) -> Image.Image:
    size = (spec.width, spec.height)
    if im.size == size:
        return im
    if spec.resize == "stretch":
        return im.resize(size, Image.Resampling.BILINEAR)
    w, h = im.size
    if spec.resize == "letterbox":
        cw, ch = content_size(im.size, spec)
        content = im.resize((max(1, round(cw)), max(1, round(ch))), Image.Resampling.BILINEAR)
        canvas = Image.new(im.mode, size, BARS)
        canvas.paste(content, (round((spec.width - content.width) / 2), round((spec.height - content.height) / 2)))
        return canvas
    # center_crop: the largest centred box of the target's aspect ratio, resized to the target.
    scale = max(spec.width / w, spec.height / h)
    bw, bh = min(w, spec.width / scale), min(h, spec.height / scale)
    box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
    return im.resize(size, Image.Resampling.BILINEAR, box=box)


def to_array(im: Image.Image, spec: InputSpec) -> np.ndarray:
    """float32 ``[C, H, W]`` in [0, 1]."""
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)[None]
        return np.repeat(arr, spec.channels, axis=0)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()
