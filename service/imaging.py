"""Bytes from a client -> a checked, decoded, resized float32 ``[C, H, W]`` array in [0, 1].

Everything here assumes hostile input: the pixel count is checked on the header before any pixel
is decoded, only a few well-trodden formats are opened at all, and every decoding failure becomes
an :class:`ImageError` that the app turns into a 4xx naming the problem.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ServiceError
from service.modelfile import InputSpec

# Formats a client may send. Pillow can open many more, some through external programs (EPS runs
# Ghostscript); a classifier service has no reason to offer that attack surface.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")

# Transparent pixels are composited over white, the way a browser shows the image on a page.
_MATTE = (255, 255, 255, 255)
# Letterbox bars are black: the zero input, and the background of digit-style datasets.
_BARS = 0

# 16-bit grayscale opens as one of the I;16 modes, or as 32-bit "I" in some Pillow versions and
# formats; either way its values span 0..65535.
_HIGH_DEPTH_GRAY = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0}


class ImageError(ServiceError):
    """The client's image cannot be used; the message says why."""


def load_image(data: bytes, spec: InputSpec, max_pixels: int) -> np.ndarray:
    """Decode ``data`` and bring it to ``spec``: float32 ``[channels, height, width]`` in [0, 1]."""
    if not data:
        raise ImageError(code="empty_image", message="the image is empty (0 bytes)")
    im = _open_checked(data, max_pixels)
    fmt = im.format
    try:
        if fmt == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result stays at least as large as
            # the model input: a phone photo for a 28x28 model then costs milliseconds, not 100s.
            side = max(spec.width, spec.height)
            im.draft(None, (side, side))
        # Only the first frame of an animation is read: that is what `load` decodes.
        im.load()
        im = ImageOps.exif_transpose(im)
        im = _to_color_mode(im, spec.color_mode)
        im = _resize(im, spec)
    except ImageError:
        raise
    except Exception as e:
        # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, ... for malformed
        # data. The bytes are the only input here, so whatever failed, the image is at fault.
        raise ImageError(code="corrupt_image", message=f"could not decode the {fmt} image: {e}") from None
    return _to_array(im, spec)


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise ImageError(
            code="not_an_image", message=f"the bytes are not an image in a supported format ({', '.join(FORMATS)})"
        ) from None
    except Image.DecompressionBombError as e:
        # Pillow's own last-resort limit, far above ours: the header promised billions of pixels.
        raise ImageError(
            code="image_too_large", message=f"the image exceeds the {max_pixels:,} pixel limit ({e})", status=413
        ) from None
    except Exception as e:  # a header broken in a way the format plugin noticed
        raise ImageError(code="corrupt_image", message=f"could not read the image header: {e}") from None
    width, height = im.size
    if width * height > max_pixels:
        raise ImageError(
            code="image_too_large",
            message=f"the image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
            status=413,
        )
    if width < 1 or height < 1:
        raise ImageError(code="corrupt_image", message=f"the image header says {width}x{height}")
    return im


def _to_color_mode(im: Image.Image, color_mode: str) -> Image.Image:
    """Convert to ``color_mode`` ("L" or "RGB"), or to "F" in [0, 1] for 16-bit grayscale."""
    if im.mode in _HIGH_DEPTH_GRAY or im.mode == "F":
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them; scale by hand.
        # A float image is taken to be in [0, 1] already. Channels are replicated after resizing.
        scale = _HIGH_DEPTH_GRAY.get(im.mode, 1.0)
        arr = np.clip(np.asarray(im, dtype=np.float32) / scale, 0.0, 1.0)
        return Image.fromarray(arr)  # float32 2-D -> mode "F"
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, _MATTE), im.convert("RGBA"))
    return im.convert(color_mode)


def _resize(im: Image.Image, spec: InputSpec) -> Image.Image:
    size = (spec.width, spec.height)
    if im.size == size:
        return im
    if spec.resize == "stretch":
        return im.resize(size, Image.Resampling.BILINEAR)
    if spec.resize == "letterbox":
        return ImageOps.pad(im, size, Image.Resampling.BILINEAR, color=_BARS)
    return ImageOps.fit(im, size, Image.Resampling.BILINEAR)  # center_crop


def _to_array(im: Image.Image, spec: InputSpec) -> np.ndarray:
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)[None]
        return np.repeat(arr, spec.channels, axis=0)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()
