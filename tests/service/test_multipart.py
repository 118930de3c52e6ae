"""The multipart/form-data parser: what real clients send comes apart into the same parts, and what
is malformed is refused with a message that says where."""

from __future__ import annotations

import httpx
import pytest

from service.multipart import MultipartError, Part, TooManyParts, boundary_of, parse


def encoded(files: list[tuple[str, tuple]], data: dict | None = None) -> tuple[bytes, str]:
    """A body and Content-Type as httpx (a real client) encodes them."""
    request = httpx.Request("POST", "http://x/predict", files=files, data=data)
    return request.read(), request.headers["content-type"]


def parts_of(body: bytes, content_type: str, max_parts: int = 16) -> list[Part]:
    return parse(body, boundary_of(content_type), max_parts)


def test_what_httpx_sends_comes_apart_byte_for_byte():
    png, jpeg = bytes(range(256)) * 3, b"\xff\xd8\r\n--not-the-boundary\r\n\xff\xd9"
    body, ctype = encoded(
        [("file", ("a b.png", png, "image/png")), ("files", ("c.jpg", jpeg, "image/jpeg"))], data={"note": "hi"}
    )
    parts = parts_of(body, ctype)
    assert [(p.name, p.filename, p.content_type, p.data) for p in parts] == [
        ("note", None, None, b"hi"),
        ("file", "a b.png", "image/png", png),
        ("files", "c.jpg", "image/jpeg", jpeg),
    ]


def test_preamble_epilogue_quoting_and_padding():
    body = (
        b"ignored preamble\r\n--b q\r\n"
        b'content-disposition: form-data; name=file; filename="say \\"hi\\".png"\r\n\r\nA\r\n'
        b"--b q  \r\n"  # whitespace after a delimiter is allowed
        b'Content-Disposition: form-data; name="file"; filename=""\r\n\r\n\r\n'
        b"--b q--\r\nignored epilogue"
    )
    first, second = parts_of(body, 'multipart/form-data; boundary="b q"')
    assert (first.filename, first.data) == ('say "hi".png', b"A")
    assert (second.filename, second.data) == ("", b"")  # a file input left empty: a file, not a text field


@pytest.mark.parametrize(
    "content_type, words",
    [
        ("multipart/form-data", "no boundary"),
        ("multipart/form-data; boundary=", "1 to 70"),
        ("multipart/form-data; boundary=" + "b" * 71, "1 to 70"),
    ],
)
def test_a_missing_or_invalid_boundary_is_named(content_type, words):
    with pytest.raises(MultipartError, match=words):
        boundary_of(content_type)


@pytest.mark.parametrize(
    "body, words",
    [
        (b"no delimiter at all", "never occurs"),
        (b"--zzz", "the body's end"),
        (b"--zzzX\r\n", "other text"),
        (b"--zzz\r\nContent-Disposition: form-data; name=file\r\nno blank line", "do not end"),
        (b"--zzz\r\nContent-Disposition: form-data; name=file\r\n\r\nabc", "not closed"),
        (b"--zzz\r\nbroken header\r\n\r\nabc\r\n--zzz--", "without a colon"),
        (b"--zzz\r\nContent-Type: image/png\r\n\r\nabc\r\n--zzz--", "no Content-Disposition"),
        (b"--zzz\r\nContent-Disposition: attachment; name=file\r\n\r\nabc\r\n--zzz--", "'form-data' with a name"),
        (b"--zzz\r\n\r\nabc\r\n--zzz--", "no Content-Disposition"),
        (b"--zzz\r\nX: " + b"y" * 9000 + b"\r\n\r\nabc\r\n--zzz--", "8,192 bytes"),
    ],
)
def test_malformed_bodies_are_refused_with_the_reason(body, words):
    with pytest.raises(MultipartError, match=words):
        parse(body, b"zzz", 16)


def test_parts_beyond_the_limit_are_refused_before_they_are_read():
    body, ctype = encoded([("files", (f"{i}.png", b"x", "image/png")) for i in range(5)])
    assert len(parts_of(body, ctype, max_parts=5)) == 5
    with pytest.raises(TooManyParts, match="more than 4 parts"):
        parts_of(body, ctype, max_parts=4)
