"""Bytes from a client -> a checked, decoded, resized float32 ``[C, H, W]`` array in [0, 1].

Everything here assumes hostile input. Two steps, so that a caller can budget memory between them:

- :func:`open_image` reads the header only: format, mode, size, each checked against the limits
  before any pixel is decoded, and says how many bytes decoding will take (``OpenedImage.cost``).
- :func:`decode` decodes and shrinks. The only full-size buffers are the decoded image and, for a
  few modes (palette, 1-bit, 16-bit), one converted copy; everything after ``Image.reduce`` is small
  (JPEG decodes at 1/2..1/8 scale in libjpeg itself). Decoding stops at the caller's deadline.

Every decoding failure becomes an :class:`ImageError`: a 4xx naming the problem.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from modelfile import InputSpec
from modelfile.pixels import FORMATS, reduce_mode, reduction, to_array, to_input
from service.errors import DeadlineExceeded, ServiceError
from service.pipeline.deadline import Deadline

# Modes the decoder knows how to bring to L/RGB, and the bytes per pixel Pillow stores them in
# (three-band images take four bytes a pixel in Pillow's memory).
_BYTES_PER_PIXEL = {
    "1": 1, "L": 1, "P": 1, "LA": 4, "La": 4, "PA": 4, "RGB": 4, "RGBA": 4, "RGBa": 4, "RGBX": 4,
    "CMYK": 4, "YCbCr": 4, "LAB": 4, "HSV": 4, "I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
}  # fmt: skip
# Bytes of a decode beyond the decoded pixels: per pixel, the one full-size copy a decode may make
# (a conversion when no reduction applies); per row, Pillow's row pointers (8 bytes) for each of the
# two images; per pixel of a JPEG file, libjpeg's coefficient buffers (2 bytes a sample, 3 samples),
# kept at full resolution even when it decodes at 1/8 scale; per pixel of a slice, its crop, its
# conversion and its reduction; and a fixed share for codec state.
_COPY_BYTES_PER_PIXEL = 4
_ROW_BYTES = 16
_JPEG_BYTES_PER_PIXEL = 6
_SLICE_BYTES_PER_PIXEL = 12
_FIXED_COST = 256 << 10

# Pixels per slice when a large image is checked, converted and reduced a slice at a time.
_SLICE_PIXELS = 1 << 20


class ImageError(ServiceError):
    """The client's image cannot be used; the message says why."""


@dataclass(frozen=True)
class OpenedImage:
    """An image whose header was read and checked, and the most bytes decoding it may allocate."""

    image: Image.Image
    cost: int


@dataclass(frozen=True)
class DecodeLimits:
    """What an image's header may promise (settings ``max_pixels``, ``max_image_side``, ``max_aspect_ratio``)."""

    max_pixels: int
    max_side: int = 2**31 - 1  # no limit unless given
    max_aspect_ratio: float = float("inf")


def load_image(data: bytes, spec: InputSpec, limits: DecodeLimits, deadline: Deadline | None = None) -> np.ndarray:
    """Decode ``data`` and bring it to ``spec``: float32 ``[channels, height, width]`` in [0, 1]."""
    return decode(open_image(data, spec, limits), spec, deadline)


def load_small_image(
    data: bytes, spec: InputSpec, limits: DecodeLimits, small_bytes: int, deadline: Deadline | None = None
) -> np.ndarray | OpenedImage:
    """:func:`load_image` if decoding costs at most ``small_bytes``, else the opened (undecoded) image.

    Everyday uploads are small: one call (one thread hop) reads the header and decodes; a large
    image comes back opened, for the caller to reserve its decode memory first.
    """
    opened = open_image(data, spec, limits)
    return decode(opened, spec, deadline) if opened.cost <= small_bytes else opened


def open_image(data: bytes, spec: InputSpec, limits: DecodeLimits) -> OpenedImage:
    """Read and check the header; no pixel is decoded. JPEGs are set to decode at reduced scale."""
    if not data:
        raise ImageError(code="empty_image", message="the image is empty (0 bytes)")
    try:
        im = Image.open(_DeadlineReader(data), formats=FORMATS)
    except UnidentifiedImageError:
        fmt = _format_by_signature(data)
        if fmt is not None:  # Pillow refused a header that starts like one it reads
            raise ImageError(
                code="corrupt_image", message=f"the bytes start like a {fmt} file but its header is invalid"
            ) from None
        raise ImageError(
            code="not_an_image", message=f"the bytes are not an image in a supported format ({', '.join(FORMATS)})"
        ) from None
    except Image.DecompressionBombError as e:
        # Pillow's own last-resort limit, far above ours: the header promised billions of pixels.
        raise ImageError(
            code="image_too_large", message=f"the image exceeds the {limits.max_pixels:,} pixel limit ({e})", status=413
        ) from None
    except Exception as e:  # a header broken in a way the format plugin noticed
        raise ImageError(code="corrupt_image", message=f"could not read the image header: {e}") from None
    _check_header(im, limits)
    width, height = im.size
    file_cost = 0
    if im.format == "JPEG":
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale while the result stays at least as large as the
        # model input: a phone photo for a 28x28 model then costs milliseconds and little memory.
        side = max(spec.width, spec.height)
        im.draft(None, (side, side))
        file_cost = width * height * _JPEG_BYTES_PER_PIXEL
    width, height = im.size  # as decoded (after draft)
    pixels = width * height
    pixel_bytes = _BYTES_PER_PIXEL[im.mode] + _COPY_BYTES_PER_PIXEL
    slice_bytes = min(pixels, _SLICE_PIXELS + width) * _SLICE_BYTES_PER_PIXEL
    return OpenedImage(im, pixels * pixel_bytes + height * _ROW_BYTES + file_cost + slice_bytes + _FIXED_COST)


def decode(opened: OpenedImage, spec: InputSpec, deadline: Deadline | None = None) -> np.ndarray:
    """Decode an image from :func:`open_image` and bring it to ``spec``."""
    im = opened.image
    fmt = im.format
    if isinstance(im.fp, _DeadlineReader):
        im.fp.deadline = deadline
    try:
        # Only the first frame of an animation is read: that is what `load` decodes.
        im.load()
        im = to_input(im, spec, _reduce)
    except (ImageError, DeadlineExceeded):
        raise
    except Exception as e:
        # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, ... for malformed
        # data. The bytes are the only input here, so whatever failed, the image is at fault.
        raise ImageError(code="corrupt_image", message=f"could not decode the {fmt} image: {e}") from None
    return to_array(im, spec)


class _DeadlineReader(io.BytesIO):
    """The upload as a file that refuses to be read past a deadline.

    Pillow's decoders pull compressed data in blocks of 64 KiB, so a decode that outlives its
    request stops within one block instead of running (and holding memory) for nobody.
    """

    deadline: Deadline | None = None

    def read(self, size: int | None = -1) -> bytes:
        if self.deadline is not None and self.deadline.passed():
            raise DeadlineExceeded("the request's deadline passed while its image was being decoded")
        return super().read(size)


_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}  # fmt: skip


def _format_by_signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES.items() if data.startswith(magic)), None)


def _check_header(im: Image.Image, limits: DecodeLimits) -> None:
    width, height = im.size
    if width < 1 or height < 1:
        raise ImageError(code="corrupt_image", message=f"the image header says {width}x{height}")
    if width * height > limits.max_pixels:
        raise ImageError(
            code="image_too_large",
            message=f"the image is {width}x{height} = {width * height:,} pixels; the limit is {limits.max_pixels:,}",
            status=413,
        )
    if max(width, height) > limits.max_side:
        raise ImageError(
            code="image_too_large",
            message=f"the image is {width}x{height}; the limit is {limits.max_side:,} pixels a side",
            status=413,
        )
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise ImageError(
            code="aspect_ratio_too_large",
            message=f"the image is {width}x{height}, an aspect ratio of {max(width, height) / min(width, height):,.0f}"
            f":1; the limit is {limits.max_aspect_ratio:g}:1",
        )
    if im.mode not in _BYTES_PER_PIXEL:
        raise ImageError(
            code="unsupported_image_mode",
            message=f"the {im.format} image is in pixel mode {im.mode!r}, which the service does not convert; "
            "send grayscale, RGB(A), palette, CMYK, LAB, 16-bit or float images",
            status=415,
        )


def _check_finite(part: Image.Image, fmt: str | None) -> None:
    bad = int(np.count_nonzero(~np.isfinite(np.asarray(part))))
    if bad:
        raise ImageError(
            code="non_finite_pixels",
            message=f"the {fmt} image has pixel values that are NaN or infinite (at least {bad:,}); "
            "pixel values must be finite numbers",
        )


def _reduce(im: Image.Image, spec: InputSpec, swapped: bool) -> Image.Image:
    """Shrink by whole factors per side while ``modelfile.pixels.REDUCING_GAP`` times the final size remains.

    The image goes through in slices of whole reduction boxes: each slice is checked for NaN,
    converted to a mode ``Image.reduce`` takes and reduced on its own, so nothing full-size is
    made beside the decoded image (``reduce`` itself would copy RGBA images whole, premultiplied).
    """
    w, h = im.size
    fx, fy = reduction(im.size, spec, swapped)
    mode = reduce_mode(im)
    if fx == 1 and fy == 1 and mode == im.mode and im.mode != "F":
        return im
    out = Image.new(mode, (-(-w // fx), -(-h // fy)))
    rows = fy * max(1, _SLICE_PIXELS // (w * fy))
    for top in range(0, h, rows):
        part = im.crop((0, top, w, min(h, top + rows)))
        if part.mode == "F":
            _check_finite(part, im.format)
        part = part.convert(mode) if mode != part.mode else part
        out.paste(part.reduce((fx, fy)) if (fx, fy) != (1, 1) else part, (0, top // fy))
    if "transparency" in im.info and mode == im.mode:
        out.info["transparency"] = im.info["transparency"]
    return out
