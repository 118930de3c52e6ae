"""The hostile-input suite, against the real server: every client mistake is a 4xx JSON error that
names the problem, never a 5xx; awkward but valid images get the answer their picture deserves; and
after every single case the server still answers a normal request.

The shared server runs with small limits (see ``SHARED_LIMITS``): 2 MiB bodies, 4 megapixels, 8
files, 20,000 pixels a side, aspect ratios up to 100:1. Every file is built in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from hostile_images import (
    DIGITS,
    animated_gif,
    bit_flipped,
    bmp_header,
    exif_rotated,
    float_digit_with,
    float_tiff,
    gif_header,
    jpeg_header,
    lab_tiff,
    large_float_tiff_with_nan,
    one_bit,
    photo_file,
    png_header,
    png_rows,
    sixteen_bit,
    tiff,
    truncated,
)
from PIL import Image
from samples import bomb_png, digit, digit_png, encode, photo
from servers import DEFAULT_MODEL, RGB_MODEL, SHARED_LIMITS

MAX_BYTES = SHARED_LIMITS["max_upload_bytes"]


@pytest.fixture(autouse=True)
def server_keeps_serving(client: httpx.Client):
    yield
    png, label = digit_png(0)
    after = client.post("/predict", files={"file": ("after.png", png, "image/png")})
    assert after.status_code == 200, f"the server stopped serving after this case: {after.text}"
    assert after.json()["predictions"][0]["label"] == str(label)


def assert_error(response: httpx.Response, status: int, code: str | None, *words: str) -> str:
    """A JSON error of ``status`` naming the problem: ``{"error": {code, message}}``, or on /v2 ``{"error": "..."}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    if response.request.url.path.startswith("/v2"):
        assert isinstance(error, str)
        message = error
    else:
        assert error["code"] == code, error
        message = error["message"]
    for word in words:
        assert word in message, message
    return message


# --- how a case is sent --------------------------------------------------------------------------

Send = Callable[[httpx.Client], httpx.Response]


def raw(data: bytes, ctype: str = "image/png", **params: object) -> Send:
    return lambda c: c.post("/predict", content=data, headers={"content-type": ctype}, params=params)


def upload(data: bytes, name: str = "x.png", ctype: str = "image/png", **params: object) -> Send:
    return lambda c: c.post("/predict", files={"file": (name, data, ctype)}, params=params)


def uploads(*files: tuple[str, bytes]) -> Send:
    return lambda c: c.post("/predict", files=[("files", (name, data, "image/png")) for name, data in files])


def v2(body: bytes | dict, header_length: str | None = None) -> Send:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    # As bytes: HTTP header values are Latin-1, where '²' is one byte the server decodes back to '²'.
    headers = {} if header_length is None else {"Inference-Header-Content-Length": header_length.encode("latin-1")}
    return lambda c: c.post(f"/v2/models/{DEFAULT_MODEL}/infer", content=content, headers=headers)


def v2_tensor(data: object = None, **parameters: object) -> dict:
    values = np.full(784, 0.5).tolist() if data is None else data
    tensor = {"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": values}
    return {"inputs": [tensor], "parameters": parameters}


def v2_binary(values: np.ndarray, header_length: str | None = None) -> Send:
    tensor = {"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 3136}}
    head = json.dumps({"inputs": [tensor]}).encode()
    return v2(head + values.astype("<f4").tobytes(), header_length or str(len(head)))


def streamed(total: int) -> Send:
    chunk = b"\x00" * 65536
    return lambda c: c.post(
        "/predict", content=(chunk for _ in range(total // len(chunk) + 1)), headers={"content-type": "image/png"}
    )


@dataclass(frozen=True)
class Refused:
    id: str
    send: Callable[[], Send]  # built lazily: collecting the suite builds no file
    status: int
    code: str | None
    words: tuple[str, ...] = ()


def refused(id: str, send: Callable[[], Send], status: int, code: str | None, *words: str) -> Refused:
    return Refused(id, send, status, code, words)


def digit_file(i: int = 0) -> Image.Image:
    return digit(i)[0]


def nan_json() -> bytes:
    return json.dumps(v2_tensor()).replace("0.5", "NaN", 1).encode()  # Python's json reads NaN


REFUSED = [
    # --- the body is not what /predict takes
    refused("empty-raw-body", lambda: raw(b""), 400, "empty_image", "empty"),
    refused("empty-uploaded-file", lambda: upload(b"", "blank.png"), 400, "empty_image", "'blank.png'", "empty"),
    refused("type-json", lambda: raw(b"{}", "application/json"), 415, "unsupported_media_type", "'application/json'"),
    refused("type-text", lambda: raw(b"hello", "text/plain"), 415, "unsupported_media_type", "'text/plain'", "image/*"),
    refused("type-pdf", lambda: raw(b"%PDF-1.7", "application/pdf"), 415, "unsupported_media_type", "application/pdf"),
    refused("type-urlencoded", lambda: raw(b"a=1", "application/x-www-form-urlencoded"), 415, "unsupported_media_type"),
    refused("type-missing", lambda: raw(b"abc", ""), 415, "unsupported_media_type", "none"),
    refused(
        "type-octet-stream", lambda: raw(digit_png(0)[0], "application/octet-stream"), 415, "unsupported_media_type"
    ),
    refused(
        "multipart-without-file-field",
        lambda: lambda c: c.post("/predict", files={"picture": ("a.png", b"x", "image/png")}),
        400,
        "no_image",
        "'picture'",
        "'file'",
    ),
    refused(
        "multipart-file-is-text",
        lambda: lambda c: c.post("/predict", files={"file": (None, b"text")}),
        400,
        "no_image",
        "text, not a file",
    ),
    refused(
        "multipart-unknown-field",
        lambda: (
            lambda c: c.post("/predict", files={"file": ("a.png", digit_png(0)[0], "image/png"), "top_k": (None, b"3")})
        ),
        400,
        "unknown_field",
        "'top_k'",
        "query parameters",
    ),
    refused(
        "multipart-malformed",
        lambda: raw(b"--zzz\r\nnonsense", "multipart/form-data; boundary=zzz"),
        400,
        "invalid_multipart",
        "part 1's headers do not end",
    ),
    refused(
        "multipart-without-boundary",
        lambda: raw(b"--zzz\r\n\r\n--zzz--", "multipart/form-data"),
        400,
        "invalid_multipart",
        "no boundary",
    ),
    refused(
        "multipart-first-boundary-mid-line",  # taken for preamble, the first part would vanish unannounced
        lambda: raw(
            b'x--zzz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nabc\r\n--zzz--',
            "multipart/form-data; boundary=zzz",
        ),
        400,
        "invalid_multipart",
        "first boundary does not start a line",
    ),
    refused(
        "multipart-cut-short",
        lambda: raw(
            b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nabc',
            "multipart/form-data; boundary=zzz",
        ),
        400,
        "invalid_multipart",
        "not closed by the boundary",
    ),
    # --- bytes that are no image, or not one of ours
    refused("pdf", lambda: upload(b"%PDF-1.7\n" + b"x" * 500, "doc.pdf"), 400, "not_an_image", "'doc.pdf'", "PNG"),
    refused("html", lambda: raw(b"<!doctype html><html></html>"), 400, "not_an_image"),
    refused("zip", lambda: raw(b"PK\x03\x04" + b"\x00" * 100), 400, "not_an_image"),
    refused("elf", lambda: raw(b"\x7fELF\x02\x01\x01" + b"\x00" * 100), 400, "not_an_image"),
    refused("random-bytes", lambda: raw(np.random.default_rng(1).bytes(4096)), 400, "not_an_image"),
    refused(
        "eps-never-reaches-ghostscript",
        lambda: raw(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n"),
        400,
        "not_an_image",
    ),
    refused("svg", lambda: raw(b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'), 400, "not_an_image"),
    refused("ico", lambda: raw(encode(Image.new("RGB", (16, 16)), "ICO")), 400, "not_an_image"),
    refused("tga", lambda: raw(encode(Image.new("RGB", (16, 16)), "TGA")), 400, "not_an_image"),
    # --- truncated and corrupt files
    refused("truncated-png", lambda: raw(truncated(photo_file())), 400, "corrupt_image", "PNG", "truncated"),
    refused(
        "truncated-jpeg",
        lambda: raw(truncated(photo_file("chelsea", "JPEG"))),
        400,
        "corrupt_image",
        "JPEG",
        "truncated",
    ),
    refused(
        "truncated-gif", lambda: raw(truncated(photo_file("camera", "GIF"))), 400, "corrupt_image", "GIF", "truncated"
    ),
    refused(
        "truncated-tiff",
        lambda: raw(truncated(photo_file("camera", "TIFF"))),
        400,
        "corrupt_image",
        "TIFF",
        "truncated",
    ),
    refused(
        "truncated-bmp", lambda: raw(truncated(photo_file("camera", "BMP"))), 400, "corrupt_image", "BMP", "truncated"
    ),
    refused("truncated-webp", lambda: raw(truncated(photo_file("camera", "WEBP"))), 400, "corrupt_image", "decoder"),
    refused("png-broken-stream", lambda: raw(bit_flipped(photo_file())), 400, "corrupt_image", "PNG", "broken"),
    refused("png-header-without-pixels", lambda: raw(png_header(20, 20)), 400, "corrupt_image", "PNG", "truncated"),
    refused("bmp-negative-height", lambda: raw(bmp_header(100, -100)), 400, "corrupt_image", "BMP"),
    # --- headers that promise too much: refused before a pixel is decoded
    refused("bomb-png-30000x30000", lambda: raw(bomb_png()), 413, "image_too_large", "pixel limit"),
    refused(
        "png-2500x2000-over-limit", lambda: raw(bomb_png(2500, 2000)), 413, "image_too_large", "2500x2000", "4,000,000"
    ),
    refused("png-1x50000000-rgba", lambda: raw(png_rows(1, 50_000_000)), 413, "image_too_large", "1x50000000"),
    refused("png-1x4000000-side", lambda: raw(png_rows(1, 4_000_000)), 413, "image_too_large", "20,000 pixels a side"),
    refused(
        "png-15000x10-aspect", lambda: raw(png_rows(15_000, 10)), 400, "aspect_ratio_too_large", "1,500:1", "100:1"
    ),
    refused("png-2^31-squared", lambda: raw(png_header(2**31 - 1, 2**31 - 1)), 413, "image_too_large"),
    refused("jpeg-65000-squared", lambda: raw(jpeg_header(65_000, 65_000)), 413, "image_too_large"),
    refused("gif-65535-squared", lambda: raw(gif_header(65_535, 65_535)), 413, "image_too_large"),
    refused("bmp-60000-squared", lambda: raw(bmp_header(60_000, 60_000)), 413, "image_too_large"),
    # --- zero-size images
    refused("png-0x0", lambda: raw(png_header(0, 0)), 400, "corrupt_image", "PNG", "header"),
    refused("png-0x10", lambda: raw(png_header(0, 10)), 400, "corrupt_image", "PNG", "header"),
    refused("jpeg-0x10", lambda: raw(jpeg_header(0, 10)), 400, "corrupt_image", "JPEG", "header"),
    refused("gif-0x0", lambda: raw(gif_header(0, 0)), 400, "corrupt_image", "GIF", "header"),
    refused("bmp-0x5", lambda: raw(bmp_header(0, 5)), 400, "corrupt_image", "BMP", "header"),
    # --- pixel values that are not numbers
    refused("float-tiff-nan", lambda: raw(float_digit_with(np.nan)), 400, "non_finite_pixels", "NaN", "TIFF"),
    refused("float-tiff-inf", lambda: raw(float_digit_with(np.inf)), 400, "non_finite_pixels", "infinite"),
    refused("float-tiff-minus-inf", lambda: raw(float_digit_with(-np.inf)), 400, "non_finite_pixels", "infinite"),
    refused("float-tiff-nan-corner", lambda: raw(float_digit_with(np.nan, (27, 27))), 400, "non_finite_pixels"),
    refused(
        "float-tiff-1500-last-pixel-nan", lambda: raw(large_float_tiff_with_nan()), 400, "non_finite_pixels", "NaN"
    ),
    # --- too much
    refused("oversize-with-length", lambda: raw(b"\x00" * (MAX_BYTES + 1)), 413, "upload_too_large", "2,097,152 bytes"),
    refused("oversize-streamed", lambda: streamed(MAX_BYTES + 65536), 413, "upload_too_large", "2,097,152 bytes"),
    refused(
        "too-many-files",
        lambda: uploads(*[(f"{i}.png", digit_png(i)[0]) for i in range(SHARED_LIMITS["max_files"] + 1)]),
        413,
        "too_many_files",
        str(SHARED_LIMITS["max_files"]),
    ),
    refused(
        "one-bad-file-among-good-ones",
        lambda: uploads(("good.png", digit_png(0)[0]), ("bad.png", b"garbage")),
        400,
        "not_an_image",
        "file 2",
        "'bad.png'",
    ),
    refused(
        "one-nan-file-among-good-ones",
        lambda: uploads(("good.png", digit_png(0)[0]), ("nan.tiff", float_digit_with(np.nan))),
        400,
        "non_finite_pixels",
        "file 2",
        "'nan.tiff'",
    ),
    # --- parameters and routes
    refused(
        "unknown-model",
        lambda: upload(digit_png(0)[0], model="no-such-model"),
        404,
        "model_not_found",
        "'no-such-model'",
        DEFAULT_MODEL,
    ),
    refused("top-k-0", lambda: upload(digit_png(0)[0], top_k="0"), 422, "invalid_parameter", "top_k"),
    refused("top-k-word", lambda: upload(digit_png(0)[0], top_k="eleven"), 422, "invalid_parameter", "top_k"),
    refused("top-k-too-many", lambda: upload(digit_png(0)[0], top_k="11"), 422, "invalid_parameter", "top_k"),
    refused("unknown-route", lambda: lambda c: c.get("/nope"), 404, "not_found", "/nope"),
    refused("wrong-method", lambda: lambda c: c.get("/predict"), 405, "method_not_allowed"),
    # --- Open Inference Protocol: header lengths, non-finite tensors, parameters
    refused(
        "v2-header-length-superscript-two",
        lambda: v2(b"{}", "²"),
        400,
        None,
        "Inference-Header-Content-Length",
        "ASCII",
    ),
    refused(
        "v2-header-length-5000-digits",
        lambda: v2(b"{}", "9" * 5000),
        400,
        None,
        "Inference-Header-Content-Length",
        "5,000 characters",
    ),
    refused("v2-header-length-superscript-one", lambda: v2(b"{}", "¹"), 400, None, "ASCII digits"),
    refused("v2-header-length-negative", lambda: v2(b"{}", "-1"), 400, None, "ASCII digits"),
    refused("v2-header-length-hex", lambda: v2(b"{}", "0x10"), 400, None, "ASCII digits"),
    refused("v2-header-length-zero", lambda: v2(b"{}", "0"), 400, None, "between 1 and"),
    refused("v2-header-length-past-body", lambda: v2(b"{}", "3"), 400, None, "between 1 and the body's 2 bytes"),
    refused("v2-json-nan", lambda: v2(nan_json()), 400, None, "NaN or infinite"),
    refused("v2-json-infinity", lambda: v2(nan_json().replace(b"NaN", b"Infinity")), 400, None, "NaN or infinite"),
    refused("v2-json-huge-number", lambda: v2(nan_json().replace(b"NaN", b"1e400")), 400, None, "NaN or infinite"),
    refused("v2-binary-nan", lambda: v2_binary(np.full(784, np.nan)), 400, None, "784 value(s) that are NaN"),
    refused("v2-binary-inf", lambda: v2_binary(np.r_[np.full(783, 0.5), np.inf]), 400, None, "1 value(s)"),
    refused("v2-out-of-range", lambda: v2(v2_tensor([2.0] * 784)), 400, None, "[0, 1]", "2"),
    refused("v2-timeout-not-a-number", lambda: v2(v2_tensor(timeout="soon")), 400, None, "parameters.timeout"),
    refused("v2-timeout-negative", lambda: v2(v2_tensor(timeout=-5)), 400, None, "parameters.timeout"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_refused_with_a_json_error_naming_the_problem(client, case):
    assert_error(case.send()(client), case.status, case.code, *case.words)


# --- awkward but valid images: the answer their picture deserves --------------------------------

# Encodings of a known digit. The bundled model must see the digit in every one of them: the label
# is the digit's and the verdict is in-distribution, exactly as for the plain PNG.
DIGIT_ENCODINGS: dict[str, Callable[[Image.Image], bytes]] = {
    "png": lambda im: encode(im),
    "png-interlaced": lambda im: encode(im.resize((280, 280)), "PNG", interlace=1),
    "jpeg": lambda im: encode(im, "JPEG", quality=95),
    "jpeg-progressive-1000px": lambda im: encode(im.resize((1000, 1000)), "JPEG", quality=90, progressive=True),
    "gif": lambda im: encode(im, "GIF"),
    "gif-animated": animated_gif,
    "bmp": lambda im: encode(im, "BMP"),
    "tiff": tiff,
    "tiff-lzw": lambda im: tiff(im, compression="tiff_lzw"),
    "tiff-jpeg": lambda im: tiff(im.convert("RGB"), compression="jpeg"),
    "webp": lambda im: encode(im, "WEBP", quality=90),
    "webp-lossless": lambda im: encode(im, "WEBP", lossless=True),
    "16-bit-png": sixteen_bit,
    "16-bit-tiff": lambda im: sixteen_bit(im, "TIFF"),
    "float-tiff": lambda im: float_tiff(np.asarray(im) / 255),
    "1-bit": one_bit,
    "palette": lambda im: encode(im.convert("P")),
    "gray-alpha": lambda im: encode(im.convert("LA")),
    "rgb": lambda im: encode(im.convert("RGB")),
    "rgba-opaque": lambda im: encode(im.convert("RGBA")),
    "cmyk-jpeg": lambda im: encode(im.convert("CMYK"), "JPEG", quality=95),
    "cmyk-tiff": lambda im: tiff(im.convert("CMYK")),
    "ycbcr-tiff": lambda im: tiff(im.convert("RGB").convert("YCbCr")),
    "lab-tiff": lab_tiff,
    "exif-rotated-jpeg": exif_rotated,
    "exif-rotated-tiff": lambda im: exif_rotated(im, "TIFF"),
    "exif-rotated-png": lambda im: exif_rotated(im, "PNG"),
    "exif-rotated-webp": lambda im: exif_rotated(im, "WEBP"),
    "upscaled-2000px": lambda im: encode(im.resize((2000, 2000))),
    "upscaled-2000x1000": lambda im: encode(im.resize((2000, 1000))),
}


@pytest.mark.parametrize("encoding", DIGIT_ENCODINGS)
def test_a_known_digit_in_every_encoding_is_that_digit_and_in_distribution(client, encoding):
    index = 3157  # a 6, classified with a score far below the threshold
    data = DIGIT_ENCODINGS[encoding](digit(index)[0])
    response = upload(data, encoding, "application/octet-stream")(client)
    assert response.status_code == 200, response.text
    [p] = response.json()["predictions"]
    assert p["label"] == str(DIGITS[index]) and p["is_ood"] is False, p
    assert p["ood_score"] <= p["threshold"] and p["probabilities"][p["label"]] == p["confidence"]


PHOTOS = {
    "jpeg": lambda: photo_file("chelsea", "JPEG"),
    "png-rgba": lambda: encode(photo("astronaut").convert("RGBA")),
    "palette": lambda: encode(photo("coffee").convert("P", palette=Image.Palette.ADAPTIVE)),
    "bmp": lambda: photo_file("camera", "BMP"),
    "webp": lambda: photo_file("chelsea", "WEBP"),
    "cmyk-jpeg": lambda: encode(photo("chelsea").convert("CMYK"), "JPEG"),
    "cmyk-tiff": lambda: tiff(photo("chelsea").convert("CMYK")),
    "lab-tiff": lambda: lab_tiff(photo("coffee")),
    "16-bit-tiff": lambda: encode(Image.fromarray(np.asarray(photo("camera")).astype(np.uint16) * 257), "TIFF"),
    "tall-40x4000": lambda: png_rows(40, 4000),
    "1x1": lambda: encode(Image.new("L", (1, 1), 0)),
}


@pytest.mark.parametrize("kind", PHOTOS)
def test_photos_and_odd_shapes_are_flagged_ood_by_the_digit_model(client, kind):
    response = upload(PHOTOS[kind](), kind, "application/octet-stream")(client)
    assert response.status_code == 200, response.text
    [p] = response.json()["predictions"]
    assert p["is_ood"] is True and p["ood_score"] > p["threshold"], p


# Lossless encodings of one colour picture: the RGB model must answer exactly as for its PNG.
LOSSLESS = {
    "bmp": lambda im: encode(im, "BMP"),
    "tiff": tiff,
    "tiff-lzw": lambda im: tiff(im, compression="tiff_lzw"),
    "webp-lossless": lambda im: encode(im, "WEBP", lossless=True),
    "rgba-opaque": lambda im: encode(im.convert("RGBA")),
    "exif-rotated-png": lambda im: exif_rotated(im, "PNG"),
}


@pytest.mark.parametrize("kind", LOSSLESS)
def test_lossless_encodings_get_exactly_the_answer_of_the_png(client, kind):
    picture = photo("coffee").resize((120, 80))
    reference = upload(encode(picture), "ref.png", model=RGB_MODEL)(client).json()["predictions"][0]
    response = upload(LOSSLESS[kind](picture), kind, "application/octet-stream", model=RGB_MODEL)(client)
    assert response.status_code == 200, response.text
    [p] = response.json()["predictions"]
    assert p["label"] == reference["label"] and p["is_ood"] == reference["is_ood"]
    assert p["ood_score"] == pytest.approx(reference["ood_score"], abs=1e-6)


def test_many_known_digits_in_one_request_come_back_in_order(client):
    files = [(f"{i}.png", digit_png(i)[0]) for i in list(DIGITS)[: SHARED_LIMITS["max_files"]]]
    response = uploads(*files)(client)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == [name for name, _ in files]
    assert [p["label"] for p in predictions] == [str(DIGITS[int(name[:-4])]) for name, _ in files]
    assert not any(p["is_ood"] for p in predictions)


def test_the_largest_files_allowed_many_in_one_request(client):
    # 8 RGBA PNGs of 2000 x 2000 (the pixel limit each), 8 x 16 MB decoded from ~0.2 MB of upload.
    files = [(f"{i}.png", png_rows(2000, 2000)) for i in range(SHARED_LIMITS["max_files"])]
    response = uploads(*files)(client)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == SHARED_LIMITS["max_files"] and all(p["is_ood"] for p in predictions)


def test_sixteen_bit_digit_is_classified_like_its_8_bit_original(client):
    eight = upload(encode(digit(3)[0]))(client).json()["predictions"][0]
    sixteen = upload(sixteen_bit(digit(3)[0]))(client).json()["predictions"][0]
    assert sixteen["label"] == eight["label"]
    assert sixteen["ood_score"] == pytest.approx(eight["ood_score"], abs=1e-3)
