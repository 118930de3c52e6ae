"""Decoding and preprocessing: real images of every awkward kind become the tensor the model expects."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from samples import bomb_png, digit, encode, photo

from service.imaging import ImageError, load_image
from service.modelfile import InputSpec

GRAY28 = InputSpec(channels=1, height=28, width=28, color_mode="L", resize="stretch")
RGB32 = InputSpec(channels=3, height=32, width=32, color_mode="RGB", resize="stretch")
LIMIT = 50_000_000


def load(data: bytes, spec: InputSpec = GRAY28, max_pixels: int = LIMIT) -> np.ndarray:
    return load_image(data, spec, max_pixels)


def test_a_digit_png_round_trips_exactly():
    im, _ = digit(0)
    x = load(encode(im))
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], np.asarray(im) / 255.0, atol=1e-7)


def test_a_photo_becomes_gray_or_rgb_in_unit_range():
    data = encode(photo("chelsea"), "JPEG", quality=90)
    gray, rgb = load(data), load(data, RGB32)
    assert gray.shape == (1, 28, 28) and rgb.shape == (3, 32, 32)
    assert gray.min() >= 0.0 and gray.max() <= 1.0 and rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert gray.std() > 0.05  # a real picture, not a blank


def test_sixteen_bit_gray_is_scaled_not_clipped():
    # Pillow's convert("L") would clip every value above 255 to white.
    ramp = np.tile(np.linspace(0, 65535, 28).astype(np.uint16), (28, 1))
    x = load(encode(Image.fromarray(ramp)))
    np.testing.assert_allclose(x[0, 0], ramp[0] / 65535.0, atol=1e-4)
    rgb = load(encode(Image.fromarray(ramp)), RGB32)
    assert rgb.shape == (3, 32, 32) and np.allclose(rgb[0], rgb[2])


def test_cmyk_jpeg_and_tiff_decode_to_the_right_colour():
    red = Image.new("RGB", (40, 40), (255, 0, 0)).convert("CMYK")
    for data in (encode(red, "JPEG", quality=95), encode(red, "TIFF")):
        x = load(data, RGB32)
        assert x[0].mean() > 0.9 and x[1].mean() < 0.1 and x[2].mean() < 0.1


def test_transparency_is_composited_over_white():
    clear = Image.new("RGBA", (28, 28), (0, 0, 0, 0))
    clear.paste((0, 0, 0, 255), (10, 10, 18, 18))  # an opaque black square
    for im in (clear, clear.convert("LA"), clear.convert("P")):
        if im.mode == "P":
            im.info["transparency"] = im.getpixel((0, 0))
        x = load(encode(im))
        assert x[0, 0, 0] == pytest.approx(1.0) and x[0, 14, 14] == pytest.approx(0.0)


def test_palette_image_without_alpha():
    im, _ = digit(1)
    x = load(encode(im.convert("P")))
    np.testing.assert_allclose(x[0], np.asarray(im) / 255.0, atol=2 / 255)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("L", (28, 28), v) for v in (200, 20, 120)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert load(data).mean() == pytest.approx(200 / 255, abs=0.02)


def test_exif_orientation_is_applied():
    # A tall image stored sideways with the "rotate 90" EXIF tag must come out tall.
    stored = Image.new("L", (40, 20), 0)
    stored.paste(255, (0, 0, 20, 20))  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    spec = InputSpec(channels=1, height=40, width=20, color_mode="L", resize="stretch")
    x = load(encode(stored, "JPEG", exif=exif, quality=95), spec)
    assert x[0, :20].mean() > 0.9 and x[0, 20:].mean() < 0.1  # displayed: top half white


@pytest.mark.parametrize(
    ("resize", "expected"),
    [
        ("stretch", lambda x: x.mean() == pytest.approx(1.0, abs=0.01)),
        ("letterbox", lambda x: x[0, 0].mean() < 0.01 and x[0, 14].mean() > 0.99),  # black bars top/bottom
        ("center_crop", lambda x: x.mean() == pytest.approx(1.0, abs=0.01)),
    ],
)
def test_resize_modes(resize, expected):
    wide = encode(Image.new("L", (120, 40), 255))
    x = load(wide, InputSpec(channels=1, height=28, width=28, color_mode="L", resize=resize))
    assert x.shape == (1, 28, 28) and expected(x[0][None])


def test_one_pixel_image_is_upscaled():
    assert load(encode(Image.new("L", (1, 1), 255))).min() == pytest.approx(1.0)


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_same_result():
    big = photo("astronaut").resize((2048, 2048))
    x = load(encode(big, "JPEG", quality=90), RGB32)
    reference = np.asarray(big.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    assert np.abs(x.transpose(1, 2, 0) - reference).mean() < 0.03


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_image"),
        (b"hello, I am not an image" * 10, "not_an_image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not_an_image"),  # never handed to Ghostscript
    ],
)
def test_rejects_non_images(data, code):
    with pytest.raises(ImageError) as e:
        load(data)
    assert e.value.code == code and e.value.status == 400


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_reported(fmt):
    data = encode(photo("coffee"), fmt)
    with pytest.raises(ImageError) as e:
        load(data[: len(data) // 2])
    assert e.value.code == "corrupt_image" and "truncated" in e.value.message


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageError) as e:
        load(bomb_png(3000, 3000), max_pixels=4_000_000)
    assert e.value.status == 413 and "3000x3000 = 9,000,000 pixels" in e.value.message
