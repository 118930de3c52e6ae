"""``multipart/form-data`` bodies (RFC 7578) cut into their parts in one pass over the whole body.

``/predict`` reads its body whole anyway (the request middleware caps it at ``max_upload_bytes``
and times it), so the parts are found with a few ``bytes.find`` calls instead of a streaming
parser that calls back into Python for every header and chunk (python-multipart via Starlette's
form parser cost ~90 us of a ~650 us LeNet request at saturation). Each part's data is one slice
of the body. What is not well-formed is refused with :class:`MultipartError` naming the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PART_HEADER_BYTES = 8 * 1024  # a part's headers: Content-Disposition and Content-Type need ~200 bytes
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")  # RFC 2046's bcharsnospace
# One parameter of a header value: `; name=value` or `; name="quoted \" value"`.
_PARAM = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
_ESCAPE = re.compile(r'\\(["\\])')  # only \" and \\: a Windows path's other backslashes stay


class MultipartError(ValueError):
    """The body is not the multipart/form-data it claims to be; the message says where and why."""


class TooManyParts(MultipartError):
    pass


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None  # None: a text field (no filename parameter); "" is a file input left empty
    content_type: str | None
    data: bytes


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a ``multipart/form-data`` Content-Type header."""
    _, params = _header_value(content_type)
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError("the Content-Type header has no boundary parameter")
    if not _BOUNDARY.fullmatch(boundary):
        raise MultipartError("the Content-Type header's boundary is not 1 to 70 of the characters RFC 2046 allows")
    return boundary.encode("ascii")


def parse(body: bytes, boundary: bytes, max_parts: int) -> list[Part]:
    """The parts of ``body``, in order; more than ``max_parts`` raises :class:`TooManyParts`."""
    delimiter = b"--" + boundary
    pos = _after_first_delimiter(body, delimiter)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", pos):
            return parts  # the close delimiter; an epilogue after it is ignored
        pos = _after_line_end(body, pos, len(parts))
        if len(parts) == max_parts:
            raise TooManyParts(f"more than {max_parts} parts")
        if body.startswith(b"\r\n", pos):  # no headers at all: refused below for want of a name
            headers_end, data_start = pos, pos + 2
        else:
            headers_end = body.find(b"\r\n\r\n", pos, pos + MAX_PART_HEADER_BYTES + 4)
            if headers_end < 0:
                raise MultipartError(
                    f"part {len(parts) + 1}'s headers do not end (blank line) within {MAX_PART_HEADER_BYTES:,} bytes"
                )
            data_start = headers_end + 4
        data_end = body.find(b"\r\n" + delimiter, data_start)
        if data_end < 0:
            raise MultipartError(f"part {len(parts) + 1} is not closed by the boundary (the body is cut short?)")
        parts.append(_part(body[pos:headers_end], body[data_start:data_end], len(parts) + 1))
        pos = data_end + 2 + len(delimiter)


def _after_first_delimiter(body: bytes, delimiter: bytes) -> int:
    """Past the first delimiter, which must start the body or a line.

    A preamble before it is ignored, so the delimiter that ends the preamble must be the first
    one: taking a later ``CRLF--boundary`` instead would swallow the first part into the preamble
    and drop it without a word. Bare CRs and LFs alone before it are skipped, as python-multipart
    (Starlette's parser) skips them; any other text must end with CRLF.
    """
    first = body.find(delimiter)
    if first < 0:
        raise MultipartError("the body holds no part: its boundary never occurs")
    if first > 0 and body[first - 2 : first] != b"\r\n" and body[:first].strip(b"\r\n"):
        raise MultipartError("the first boundary does not start a line: the preamble before it must end with CRLF")
    return first + len(delimiter)


def _after_line_end(body: bytes, pos: int, parts_so_far: int) -> int:
    """Past the CRLF that ends a delimiter line (RFC 2046 lets whitespace come before it)."""
    while body[pos : pos + 1] in (b" ", b"\t"):
        pos += 1
    if not body.startswith(b"\r\n", pos):
        where = "the body's end" if pos >= len(body) else "a boundary followed by other text"
        raise MultipartError(f"after part {parts_so_far}: {where}, not a line break or the closing '--'")
    return pos + 2


def _part(head: bytes, data: bytes, number: int) -> Part:
    disposition = content_type = None
    for line in head.split(b"\r\n") if head else []:
        name, colon, value = line.partition(b":")
        if not colon:
            raise MultipartError(f"part {number} has a header line without a colon")
        name = name.strip().lower()
        if name == b"content-disposition":
            disposition = value.decode("utf-8", "replace").strip()
        elif name == b"content-type":
            content_type = value.decode("latin-1").strip()
    if disposition is None:
        raise MultipartError(f"part {number} has no Content-Disposition header")
    kind, params = _header_value(disposition)
    if kind != "form-data" or "name" not in params:
        raise MultipartError(f"part {number}'s Content-Disposition is not 'form-data' with a name")
    return Part(params["name"], params.get("filename"), content_type, data)


def _header_value(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="file"; filename="a.png"'`` -> ``('form-data', {'name': 'file', ...})``."""
    kind, _, rest = value.partition(";")
    params = {}
    for m in _PARAM.finditer(";" + rest):
        raw = m.group(2)
        if raw.startswith('"'):
            raw = raw[1:-1] if "\\" not in raw else _ESCAPE.sub(r"\1", raw[1:-1])
        params[m.group(1).lower()] = raw
    return kind.strip().lower(), params
