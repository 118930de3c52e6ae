"""The multipart/form-data parser: what real clients send comes apart into the same parts, what
is malformed is refused with a message that says where, and no body loses a part without a word
(checked against python-multipart, the parser Starlette uses, on mutated bodies)."""

from __future__ import annotations

import logging
import random

import httpx
import pytest
from python_multipart.multipart import MultipartParseError, MultipartParser
from samples import digit_png

from service.http.multipart import MultipartError, Part, TooManyParts, boundary_of, parse


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
        (b"preamble--zzz\r\nContent-Disposition: form-data; name=file\r\n\r\nabc\r\n--zzz--", "start a line"),
        (b"x\n--zzz\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n--zzz\r\n", "start a line"),
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


def two_files(before: bytes, first: bytes | None = None, second: bytes | None = None) -> bytes:
    """Two PNG uploads (digits unless given) under boundary ``zzz``, after ``before``."""
    head = b'\r\nContent-Disposition: form-data; name="files"; filename="%s"\r\nContent-Type: image/png\r\n\r\n'
    return (
        before
        + b"--zzz" + head % b"first.png" + (first or digit_png(0)[0]) + b"\r\n"
        + b"--zzz" + head % b"second.png" + (second or digit_png(1)[0]) + b"\r\n"
        + b"--zzz--\r\n"
    )  # fmt: skip


@pytest.mark.parametrize("before", [b"\n", b"\r", b"\r\n", b"\n\r\n", b"a preamble\r\n"])
def test_line_breaks_or_a_preamble_before_the_first_boundary_keep_the_first_part(before):
    assert [p.filename for p in parse(two_files(before), b"zzz", 16)] == ["first.png", "second.png"]


def test_a_bare_line_break_before_the_first_boundary_loses_no_upload_on_the_server(client):
    response = client.post(
        "/predict", content=two_files(b"\n"), headers={"content-type": "multipart/form-data; boundary=zzz"}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [(p["filename"], p["label"]) for p in predictions] == [
        ("first.png", str(digit_png(0)[1])),
        ("second.png", str(digit_png(1)[1])),
    ]


# --- differential: mutated bodies against python-multipart ----------------------------------------

MUTATION_PIECES = [b"\r", b"\n", b"\r\n", b"-", b"--", b" ", b"\t", b"x", b"\r\n\r\n", b"--zzz", b"\r\n--zzz"]


def reference_parts(body: bytes, boundary: bytes) -> list[bytes] | None:
    """The data of each part python-multipart completes, or None where it refuses the body."""
    parts, chunks = [], []
    callbacks = {
        "on_part_begin": chunks.clear,
        "on_part_data": lambda data, start, end: chunks.append(data[start:end]),
        "on_part_end": lambda: parts.append(b"".join(chunks)),
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        return None
    return parts


def mutated(body: bytes, rng: random.Random) -> bytes:
    """``body`` with one to three insertions, deletions or overwrites, mostly of line breaks and
    boundary pieces at the body's start, its end or a CR, LF or dash: where the structure is."""
    for _ in range(rng.randint(1, 3)):
        anchors = [0, 0, 0, len(body)] + [i for i, c in enumerate(body) if c in b"\r\n-"]
        pos = rng.choice(anchors) if rng.random() < 0.7 else rng.randrange(len(body) + 1)
        piece = rng.choice(MUTATION_PIECES) if rng.random() < 0.8 else bytes([rng.randrange(256)])
        op = rng.randrange(3)
        if op == 0:
            body = body[:pos] + piece + body[pos:]
        elif op == 1:
            body = body[:pos] + body[pos + rng.randint(1, 4) :]
        else:
            body = body[:pos] + piece + body[pos + len(piece) :]
    return body


def test_no_mutated_body_loses_or_changes_a_part_that_python_multipart_keeps(caplog):
    """Where both parsers accept a body, they find the same parts, byte for byte; where they
    disagree, ours refuses (a 400 naming the problem), never answers with fewer parts."""
    rng = random.Random(28)
    original = two_files(b"", b"\x89PNG\r\n-\r\n--zz", b"BB\n\r--")  # data with line breaks and dashes
    caplog.set_level(logging.CRITICAL, logger="python_multipart")  # it logs every body it refuses
    both_accept = 0
    for _ in range(1000):
        body = mutated(original, rng)
        reference = reference_parts(body, b"zzz")
        try:
            ours = [p.data for p in parse(body, b"zzz", 16)]
        except MultipartError:
            continue
        if reference is not None:
            both_accept += 1
            assert ours == reference, body
    assert both_accept > 100, "the mutations hardly ever leave a body both parsers accept"
