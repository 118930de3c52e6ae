"""Hostile and awkward image files for the service tests, built in memory from real images.

Each builder returns the file's bytes; the builders are cached, so a parametrized suite builds every
file once. Headers that lie (bombs, huge or zero sizes) are written chunk by chunk, never rendered.
"""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np
from PIL import Image, ImageCms
from samples import digit, encode, photo

# Known digits the bundled model classifies confidently (index into samples.mnist(), label).
DIGITS = {0: 0, 526: 1, 1052: 2, 1578: 3, 2367: 4, 2631: 5, 3157: 6, 3946: 7, 4472: 8, 4735: 9}


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_header(width: int, height: int, color_type: int = 6, depth: int = 8, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR says width x height; ``idat`` is the compressed pixel data (may be short)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@functools.cache
def png_rows(width: int, height: int, pixel: bytes = b"\x10\x20\x30\xff", color_type: int = 6) -> bytes:
    """A valid PNG of ``height`` identical rows of ``pixel``, compressed as it streams (no pixel buffer)."""
    row = b"\x00" + pixel * width
    compressor = zlib.compressobj(9)
    per_feed = max(1, (1 << 20) // len(row))
    chunks = [compressor.compress(row * per_feed) for _ in range(height // per_feed)]
    chunks.append(compressor.compress(row * (height % per_feed)) + compressor.flush())
    return png_header(width, height, color_type, idat=b"".join(chunks))


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG whose frame header says width x height (then nothing decodable)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def gif_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen and one image say width x height."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00" * 3 + b"\xff" * 3
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + image + b"\x3b"


def bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP whose header says width x height, with no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def tiff(im: Image.Image, **options: object) -> bytes:
    return encode(im, "TIFF", **options)


def float_tiff(values: np.ndarray, **options: object) -> bytes:
    return tiff(Image.fromarray(values.astype(np.float32)), **options)


def float_digit_with(value: float, where: tuple[int, int] = (14, 14)) -> bytes:
    """A known digit as a float32 TIFF in [0, 1], with one pixel set to ``value`` (NaN, inf, ...)."""
    im, _ = digit(0)
    values = np.asarray(im, dtype=np.float32) / 255
    values[where] = value
    return float_tiff(values)


def large_float_tiff_with_nan(side: int = 1500) -> bytes:
    """A float TIFF of side x side with a single NaN in its last row (found in the last slice)."""
    values = np.full((side, side), 0.5, dtype=np.float32)
    values[-1, -1] = np.nan
    return float_tiff(values, compression="tiff_adobe_deflate")


def lab_tiff(im: Image.Image) -> bytes:
    """A CIELAB TIFF of ``im``, converted by littlecms (a real LAB image, not relabelled RGB)."""
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    return tiff(ImageCms.applyTransform(im.convert("RGB"), to_lab))


def exif_rotated(im: Image.Image, fmt: str = "JPEG") -> bytes:
    """``im`` stored turned a quarter to the left, with the EXIF tag that turns it back upright."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    options = {"quality": 95} if fmt == "JPEG" else {}
    return encode(im.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif, **options)


def animated_gif(first: Image.Image) -> bytes:
    frames = [first, *(digit(i)[0] for i in (100, 200))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)


def transparent_digit() -> bytes:
    """A known digit in RGBA: the digit opaque, the background transparent black (composited to white)."""
    im, _ = digit(0)
    gray = np.asarray(im)
    rgba = np.stack([gray, gray, gray, np.full_like(gray, 255)], axis=-1)
    return encode(Image.fromarray(rgba, "RGBA"))


def sixteen_bit(im: Image.Image, fmt: str = "PNG") -> bytes:
    return encode(Image.fromarray(np.asarray(im).astype(np.uint16) * 257), fmt)


def one_bit(im: Image.Image) -> bytes:
    return encode(im.point(lambda v: 255 if v > 127 else 0).convert("1"))


def truncated(data: bytes, share: float = 2 / 3) -> bytes:
    return data[: int(len(data) * share)]


def bit_flipped(data: bytes, offset_share: float = 0.5) -> bytes:
    corrupt = bytearray(data)
    corrupt[int(len(corrupt) * offset_share)] ^= 0xFF
    return bytes(corrupt)


@functools.cache
def photo_file(name: str = "chelsea", fmt: str = "PNG", **options: object) -> bytes:
    return encode(photo(name), fmt, **options)
