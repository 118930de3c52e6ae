"""Decoding and preprocessing: real images of every awkward kind become the tensor the model expects."""

from __future__ import annotations

import numpy as np
import pytest
from hostile_images import float_digit_with, lab_tiff, png_header, png_rows
from PIL import Image
from samples import bomb_png, digit, encode, photo

from modelfile import InputSpec
from service.errors import DeadlineExceeded
from service.pipeline.deadline import Deadline
from service.pipeline.imaging import DecodeLimits, ImageError, load_image, open_image

GRAY28 = InputSpec(channels=1, height=28, width=28, color_mode="L", resize="stretch")
RGB32 = InputSpec(channels=3, height=32, width=32, color_mode="RGB", resize="stretch")
LIMIT = 50_000_000


def load(data: bytes, spec: InputSpec = GRAY28, max_pixels: int = LIMIT) -> np.ndarray:
    return load_image(data, spec, DecodeLimits(max_pixels))


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


# --- bounded decoding ------------------------------------------------------------------------------


def test_header_limits_per_side_and_aspect_ratio_are_checked_before_decoding():
    limits = DecodeLimits(max_pixels=LIMIT, max_side=1000, max_aspect_ratio=10)
    with pytest.raises(ImageError) as side:
        load_image(png_rows(1001, 2), GRAY28, limits)
    with pytest.raises(ImageError) as aspect:
        load_image(png_rows(500, 20), GRAY28, limits)
    assert side.value.status == 413 and "1,000 pixels a side" in side.value.message
    assert (
        aspect.value.status == 400 and aspect.value.code == "aspect_ratio_too_large" and "25:1" in aspect.value.message
    )


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center_crop"])
def test_reducing_in_slices_gives_the_answer_of_a_direct_resize(resize):
    # A 4000 x 3000 photo goes through Image.reduce slice by slice; the result must match Pillow's
    # own full-size resize to within rounding.
    big = photo("astronaut").resize((4000, 3000))
    spec = InputSpec(channels=3, height=28, width=28, color_mode="RGB", resize=resize)
    x = load(encode(big, "PNG", compress_level=1), spec)
    small = load(encode(big.resize((400, 300), Image.Resampling.BOX), "PNG"), spec)
    assert x.shape == (3, 28, 28) and np.abs(x - small).mean() < 0.02


def test_a_one_pixel_wide_strip_needs_no_full_size_intermediate_and_decodes():
    # 1 x 1,000,000 RGBA: Pillow's resize would go through a 28 x 1,000,000 image; the slices do not.
    x = load_image(png_rows(1, 1_000_000, b"\x00\x00\x00\xff"), GRAY28, DecodeLimits(LIMIT))
    assert x.shape == (1, 28, 28) and x.max() == pytest.approx(0.0)


def test_float_images_with_nan_or_infinity_are_refused():
    for value in (np.nan, np.inf, -np.inf):
        with pytest.raises(ImageError) as e:
            load(float_digit_with(value))
        assert e.value.status == 400 and e.value.code == "non_finite_pixels" and "NaN or infinite" in e.value.message


def test_a_lab_tiff_is_converted_by_colour_not_by_channel():
    red = Image.new("RGB", (40, 40), (220, 30, 30))
    x = load(lab_tiff(red), RGB32)
    np.testing.assert_allclose(x.mean(axis=(1, 2)), np.array([220, 30, 30]) / 255, atol=0.03)
    gray = load(lab_tiff(red))
    assert gray.shape == (1, 28, 28) and 0.2 < gray.mean() < 0.5  # red's luminance, not its L* byte


def test_a_palette_image_with_a_transparent_colour_key_is_composited_over_white():
    im = Image.new("P", (56, 56), 0)
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    im.paste(1, (20, 20, 36, 36))  # a white square on colour 0, which is transparent
    x = load(encode(im, transparency=0))
    assert x.min() == pytest.approx(1.0)


def test_a_decode_past_its_deadline_stops_reading():
    with pytest.raises(DeadlineExceeded) as e:
        load_image(encode(photo("camera")), GRAY28, DecodeLimits(LIMIT), deadline=Deadline.after(-1))
    assert e.value.status == 504 and "decoded" in e.value.message


def test_a_header_with_zero_width_names_its_format():
    with pytest.raises(ImageError) as e:
        load(png_header(0, 10))
    assert e.value.code == "corrupt_image" and "PNG" in e.value.message


def test_the_cost_read_from_the_header_covers_the_decoded_image():
    opened = open_image(png_rows(2000, 2000), GRAY28, DecodeLimits(LIMIT))
    assert opened.cost >= 2000 * 2000 * 4 * 2  # decoded RGBA plus one full-size copy
    jpeg = open_image(encode(photo("astronaut").resize((2000, 2000)), "JPEG"), GRAY28, DecodeLimits(LIMIT))
    assert jpeg.image.size[0] < 2000 and jpeg.cost >= 2000 * 2000 * 6  # draft, but full-size coefficients
