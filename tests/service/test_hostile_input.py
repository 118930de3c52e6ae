"""Hostile and awkward input against the real server: every client mistake is a 4xx JSON error that
names the problem, never a 500, and the server keeps serving afterwards.

The shared server runs with small limits (see ``SHARED_LIMITS`` in conftest): 2 MiB bodies,
4 megapixels, 8 files.
"""

from __future__ import annotations

import httpx
import pytest
from PIL import Image
from samples import bomb_png, digit, digit_png, encode, photo
from servers import RGB_MODEL, SHARED_LIMITS


@pytest.fixture(autouse=True)
def server_keeps_serving(client: httpx.Client):
    yield
    png, _ = digit_png(0)
    after = client.post("/predict", files={"file": ("after.png", png, "image/png")})
    assert after.status_code == 200, f"the server stopped serving after this test: {after.text}"


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], error["message"]
    return error["message"]


def post_file(client: httpx.Client, data: bytes, name: str = "x.png", ctype: str = "image/png", **params):
    return client.post("/predict", files={"file": (name, data, ctype)}, params=params)


def post_raw(client: httpx.Client, data: bytes, ctype: str = "image/png", **params):
    return client.post("/predict", content=data, headers={"content-type": ctype}, params=params)


# --- malformed requests --------------------------------------------------------------------------


def test_empty_raw_body(client):
    assert_error(post_raw(client, b""), 400, "empty_image", "empty")


def test_empty_uploaded_file(client):
    assert_error(post_file(client, b"", name="blank.png"), 400, "empty_image", "'blank.png'", "empty")


def test_wrong_content_type(client):
    png, _ = digit_png(0)
    assert_error(
        post_raw(client, png, "application/json"), 415, "unsupported_media_type", "'application/json'", "image/*"
    )


def test_missing_content_type(client):
    response = client.post("/predict", content=b"abc", headers={"content-type": ""})
    assert_error(response, 415, "unsupported_media_type", "none")


def test_multipart_without_a_file_field(client):
    response = client.post("/predict", data={"picture": "not a file"})
    assert response.status_code in (400, 415)  # httpx sends urlencoded when there is no file
    response = client.post("/predict", files={"picture": ("a.png", b"x", "image/png")})
    assert_error(response, 400, "no_image", "'picture'", "'file'")


def test_malformed_multipart_body(client):
    response = client.post(
        "/predict", content=b"--zzz\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=zzz"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] in ("invalid_multipart", "no_image")


def test_non_image_bytes(client):
    assert_error(post_file(client, b"%PDF-1.7\n" + b"x" * 500, name="doc.pdf"), 400, "not_an_image", "'doc.pdf'", "PNG")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(client, fmt):
    data = encode(photo("chelsea"), fmt)
    assert_error(
        post_raw(client, data[: len(data) * 2 // 3], f"image/{fmt.lower()}"), 400, "corrupt_image", fmt, "truncated"
    )


def test_decompression_bomb_30000_squared(client):
    bomb = bomb_png()  # ~100 KB on the wire, 900 megapixels decoded
    assert len(bomb) < SHARED_LIMITS["max_upload_bytes"]
    assert_error(post_raw(client, bomb), 413, "image_too_large", "pixel limit")


def test_image_over_the_configured_pixel_limit(client):
    assert_error(
        post_raw(client, bomb_png(2500, 2000)), 413, "image_too_large", "2500x2000", f"{SHARED_LIMITS['max_pixels']:,}"
    )


def test_oversize_upload_with_content_length(client):
    big = b"\x00" * (SHARED_LIMITS["max_upload_bytes"] + 1)
    assert_error(post_raw(client, big), 413, "upload_too_large", "limit is 2,097,152 bytes")


def test_oversize_upload_streamed_without_content_length(client):
    chunk = b"\x00" * 65536
    chunks = (SHARED_LIMITS["max_upload_bytes"] // len(chunk)) + 4
    response = client.post("/predict", content=(chunk for _ in range(chunks)), headers={"content-type": "image/png"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "upload_too_large", "limit is 2,097,152 bytes")


def test_too_many_files(client):
    png, _ = digit_png(0)
    files = [("files", (f"{i}.png", png, "image/png")) for i in range(SHARED_LIMITS["max_files"] + 1)]
    assert_error(client.post("/predict", files=files), 413, "too_many_files", str(SHARED_LIMITS["max_files"]))


def test_one_bad_file_among_good_ones_is_named(client):
    png, _ = digit_png(0)
    files = [("files", ("good.png", png, "image/png")), ("files", ("bad.png", b"garbage", "image/png"))]
    assert_error(client.post("/predict", files=files), 400, "not_an_image", "file 2", "'bad.png'")


def test_unknown_model(client):
    png, _ = digit_png(0)
    assert_error(
        post_file(client, png, model="no-such-model"), 404, "model_not_found", "'no-such-model'", "mnist-acet-lenet"
    )


@pytest.mark.parametrize("top_k", ["0", "eleven", "11"])
def test_bad_top_k(client, top_k):
    png, _ = digit_png(0)
    message = assert_error(post_file(client, png, top_k=top_k), 422, "invalid_parameter")
    assert "top_k" in message


def test_unknown_route_and_wrong_method(client):
    assert_error(client.get("/nope"), 404, "not_found", "/nope")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


# --- awkward but valid images: answered normally -------------------------------------------------


def sixteen_bit() -> Image.Image:
    import numpy as np

    im, _ = digit(3)
    return Image.fromarray(np.asarray(im).astype(np.uint16) * 257)


def animated_gif() -> bytes:
    frames = [digit(i)[0] for i in (3, 100, 200)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)


AWKWARD = {
    "1x1": lambda: encode(Image.new("L", (1, 1), 0)),
    "16-bit": lambda: encode(sixteen_bit()),
    "cmyk-jpeg": lambda: encode(photo("chelsea").convert("CMYK"), "JPEG"),
    "cmyk-tiff": lambda: encode(photo("chelsea").convert("CMYK"), "TIFF"),
    "palette": lambda: encode(photo("coffee").convert("P", palette=Image.Palette.ADAPTIVE)),
    "rgba": lambda: encode(photo("astronaut").convert("RGBA")),
    "gray-alpha": lambda: encode(digit(3)[0].convert("LA")),
    "animated-gif": animated_gif,
    "bmp": lambda: encode(photo("camera"), "BMP"),
    "webp": lambda: encode(photo("chelsea"), "WEBP"),
}


@pytest.mark.parametrize("kind", AWKWARD)
@pytest.mark.parametrize("model", ["mnist-acet-lenet", RGB_MODEL])
def test_awkward_images_are_classified(client, kind, model):
    response = post_file(client, AWKWARD[kind](), name=kind, ctype="application/octet-stream", model=model)
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert 0.0 <= prediction["confidence"] <= 1.0 and isinstance(prediction["is_ood"], bool)


def test_sixteen_bit_digit_is_classified_like_its_8_bit_original(client):
    eight = post_file(client, encode(digit(3)[0])).json()["predictions"][0]
    sixteen = post_file(client, encode(sixteen_bit())).json()["predictions"][0]
    assert sixteen["label"] == eight["label"]
    assert sixteen["ood_score"] == pytest.approx(eight["ood_score"], abs=1e-3)
