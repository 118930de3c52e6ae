"""The body-size cap reads Content-Length defensively: uvicorn refuses malformed lengths itself, but
the middleware must not turn one into a 500 behind a server that passes them on."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import UploadTooLarge
from service.http.middleware import BodySizeLimit


def call(content_length: bytes, body: bytes = b"abc", limit: int = 1024) -> bytes:
    """Run the middleware around an app that reads the whole body; return what the app read."""
    read = bytearray()

    async def app(scope, receive, send):
        while True:
            message = await receive()
            read.extend(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        pass

    scope = {"type": "http", "headers": [(b"content-length", content_length)]}
    asyncio.run(BodySizeLimit(app, max_bytes=limit)(scope, receive, send))
    return bytes(read)


@pytest.mark.parametrize("declared", [b"9" * 5000, b"1" + b"0" * 30, b"2048", b" 4096 "])
def test_a_declared_length_over_the_limit_is_413_however_many_digits(declared):
    with pytest.raises(UploadTooLarge) as e:
        call(declared)
    assert e.value.status == 413 and "limit is 1,024 bytes" in e.value.message


@pytest.mark.parametrize("declared", ["²".encode("latin-1"), b"-1", b"0x10", b"", b"000000000000000000000000003"])
def test_a_length_that_is_garbage_or_small_leaves_the_body_counted_as_it_streams(declared):
    assert call(declared) == b"abc"
    with pytest.raises(UploadTooLarge):
        call(declared, body=b"x" * 2000)
