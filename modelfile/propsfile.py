"""The one writer of a model file's metadata: the ``oodserve`` entry of its ``metadata_props``, without ``onnx``.

The serving environment has onnxruntime, which reads a file's metadata but cannot write a file, and no
``onnx``. Rather than add that package (and its compiled protobuf classes) to every serving install for one
command, this edits the protobuf wire format directly: an ONNX file is a ``ModelProto`` whose top-level fields
are a flat sequence of (tag, payload), and ``metadata_props`` is field 14, repeated, each entry a
``StringStringEntryProto`` (key = field 1, value = field 2). Every other field is copied byte for byte, so the
graph and the weights of the new file are exactly the old file's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .schema import METADATA_KEY, ModelMetadata

DOC_STRING, METADATA_PROPS = 6, 14  # ModelProto.doc_string, .metadata_props (onnx.proto)
_KEY, _VALUE = 1, 2  # StringStringEntryProto.key, .value
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class NotProtobuf(ValueError):
    """The bytes are not a well-formed protobuf message (so not an ONNX file)."""


def write_metadata(path: Path, meta: ModelMetadata, *, source: Path | None = None) -> None:
    """Store ``meta`` in the file at ``path``: ``source``'s graph and weights, or its own (the exporter writes
    in place, recalibration a new file). Whole or not at all: a file the service may be watching never
    appears half-written."""
    data = with_metadata((source or path).read_bytes(), meta)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def with_metadata(model: bytes, meta: ModelMetadata) -> bytes:
    """``model`` carrying ``meta``, and a one-line description that tools such as Netron show."""
    described = _replace_field(
        model, DOC_STRING, f"oodserve model {meta.name} v{meta.version}: {meta.method}, score = {meta.score}".encode()
    )
    return replace_entry(described, METADATA_KEY, meta.to_json())


def _replace_field(model: bytes, number: int, payload: bytes) -> bytes:
    kept = [model[start:end] for n, start, end, _ in _fields(model) if n != number]
    return b"".join(kept) + _field(number, payload)


def replace_entry(model: bytes, key: str, value: str) -> bytes:
    """``model`` with its ``metadata_props`` entry ``key`` set to ``value`` (other entries kept, in order)."""
    kept = [
        model[start:end]
        for number, start, end, payload in _fields(model)
        if number != METADATA_PROPS or _entry_key(model[payload:end]) != key
    ]
    entry = _field(_KEY, key.encode()) + _field(_VALUE, value.encode())
    return b"".join(kept) + _field(METADATA_PROPS, entry)


def _entry_key(entry: bytes) -> str | None:
    return next((entry[payload:end].decode() for number, _, end, payload in _fields(entry) if number == _KEY), None)


def _fields(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start of the tag, end of the field, start of a length-delimited payload)."""
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        payload = pos
        if wire == _VARINT:
            _, pos = _varint(buf, pos)
        elif wire == _LENGTH_DELIMITED:
            length, payload = _varint(buf, pos)
            pos = payload + length
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
        else:  # groups (3, 4) are not in ONNX's schema; anything else is not protobuf
            raise NotProtobuf(f"wire type {wire} at byte {start}")
        if number == 0 or pos > len(buf):
            raise NotProtobuf(f"field {number} at byte {start} runs past the end")
        yield number, start, pos, payload


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf) and shift < 64:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
    raise NotProtobuf(f"unterminated varint at byte {pos}")


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
