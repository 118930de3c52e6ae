"""A folder of the user's images -> the model's input, decoded the way the service decodes an upload.

A threshold set on these images holds for what the service feeds the model only if both see the same pixels,
so each step is the service's (``service/imaging.py``, which this package may not import): the first frame,
JPEGs decoded at the smallest libjpeg scale still as large as the input, box-reduced by whole factors while
twice the input size remains, EXIF orientation, transparency over white, 16-bit and float images scaled to
[0, 1], ``InputSpec.resize`` with bilinear resampling. What the service does to guard a server against hostile
uploads (memory budgets, slices, deadlines) is left out: these are the user's own files.
``tests/modelfile/test_recalibrate.py`` checks that both give the same arrays.

One difference is deliberate: an image of the other colour kind (an RGB photo for a grayscale model, or the
reverse) is refused rather than converted. The service converts it, but a calibration folder of the other
kind is a wrong folder, and a threshold set on it would describe images the site does not send.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .schema import InputSpec

SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")  # the service's formats
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
_REDUCING_GAP = 2  # as the service: whole-factor box reduction while twice the final size remains
_MATTE = (255, 255, 255, 255)
_BARS = 0
_INTEGER_FULL_SCALE = 65535.0
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                7: "TRANSVERSE", 8: "ROTATE_90"}
_REDUCE_AS = {"1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}


class RefusedImages(ValueError):
    """The folder cannot calibrate this model; the message is one line naming the file or the folder."""


def image_files(folder: Path) -> list[Path]:
    """The image files below ``folder`` (class sub-folders included), sorted, hidden files left out."""
    if not folder.is_dir():
        raise RefusedImages(f"{folder}: no such folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_images(files: list[Path], spec: InputSpec, folder: Path) -> np.ndarray:
    """float32 ``[N, C, H, W]`` in [0, 1], or ``RefusedImages`` naming the first file that cannot be used."""
    from PIL import Image

    out = np.empty((len(files), spec.channels, spec.height, spec.width), np.float32)
    for i, path in enumerate(files):
        shown = path.relative_to(folder.parent)
        try:
            with Image.open(path, formats=FORMATS) as im:
                kind = colour_kind(im)
                if kind != spec.color_mode:
                    raise RefusedImages(f"{shown} is a {_KIND_WORDS[kind]} image ({im.mode}); the model takes "
                                        f"{_KIND_WORDS[spec.color_mode]} ({spec.color_mode}) images")
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
    """"L" or "RGB": which of the model's colour modes the image is (a palette image by its palette)."""
    from PIL import Image

    if im.mode in ("P", "PA"):
        palette = np.asarray(im.getpalette("RGB") or [0, 0, 0], np.uint8).reshape(-1, 3)
        return "L" if (palette == palette[:, :1]).all() else "RGB"
    return Image.getmodebase(im.mode)


def decode(im, spec: InputSpec) -> np.ndarray:
    """One opened image -> float32 ``[C, H, W]``, step for step as ``service.imaging.decode``."""
    from PIL import Image

    if im.format == "JPEG":
        im.draft(None, (max(spec.width, spec.height),) * 2)
    im.load()
    orientation = _orientation(im)
    im = _reduce(im, spec, swapped=orientation in (5, 6, 7, 8))
    if orientation in _ORIENTATION:
        im = im.transpose(Image.Transpose[_ORIENTATION[orientation]])
    im = _resize(_to_color_mode(im, spec.color_mode), spec)
    if im.mode == "F":
        return np.repeat(np.asarray(im, dtype=np.float32)[None], spec.channels, axis=0)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block: the image as stored, as the service shows it
        return 1


def _content_size(size: tuple[int, int], spec: InputSpec) -> tuple[float, float]:
    if spec.resize == "stretch":
        return spec.width, spec.height
    w, h = size
    scale = (min if spec.resize == "letterbox" else max)(spec.width / w, spec.height / h)
    return w * scale, h * scale


def _reduce(im, spec: InputSpec, swapped: bool):
    """Box-average by whole factors (the service does it in slices of whole boxes: the same pixels)."""
    w, h = im.size
    cw, ch = _content_size((h, w) if swapped else (w, h), spec)
    if swapped:
        cw, ch = ch, cw
    factors = (max(1, int(w // (_REDUCING_GAP * cw))), max(1, int(h // (_REDUCING_GAP * ch))))
    mode = _REDUCE_AS.get(im.mode, im.mode)
    if im.mode == "P" or "transparency" in im.info:  # palette indices and colour keys do not average
        mode = "RGBA" if "transparency" in im.info else "RGB"
    if factors == (1, 1) and mode == im.mode:
        return im
    reduced = im.convert(mode) if mode != im.mode else im
    reduced = reduced.reduce(factors) if factors != (1, 1) else reduced
    if "transparency" in im.info and mode == im.mode:
        reduced.info["transparency"] = im.info["transparency"]
    return reduced


def _to_color_mode(im, color_mode: str):
    from PIL import Image, ImageCms

    if im.mode in ("I", "F"):
        scale = _INTEGER_FULL_SCALE if im.mode == "I" else 1.0
        return Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) / scale, 0.0, 1.0))
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, _MATTE), im.convert("RGBA"))
    elif im.mode == "LAB":
        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        im = ImageCms.applyTransform(im, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))
    return im.convert(color_mode)


def _resize(im, spec: InputSpec):
    from PIL import Image

    size = (spec.width, spec.height)
    if im.size == size:
        return im
    if spec.resize == "stretch":
        return im.resize(size, Image.Resampling.BILINEAR)
    if spec.resize == "letterbox":
        cw, ch = _content_size(im.size, spec)
        content = im.resize((max(1, round(cw)), max(1, round(ch))), Image.Resampling.BILINEAR)
        canvas = Image.new(im.mode, size, _BARS)
        canvas.paste(content, (round((spec.width - content.width) / 2), round((spec.height - content.height) / 2)))
        return canvas
    w, h = im.size
    scale = max(spec.width / w, spec.height / h)
    bw, bh = min(w, spec.width / scale), min(h, spec.height / scale)
    return im.resize(size, Image.Resampling.BILINEAR, box=((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2))
