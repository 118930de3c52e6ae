"""The Open Inference Protocol's wire format for ``infer``: the request body (JSON, or JSON followed by
raw tensor bytes, the binary tensor extension) -> the checked ``images`` tensor, and the verdicts -> the
response body. The tensors' names, element types and shapes come from the contract (modelfile.signature);
what is malformed is refused with :class:`V2Error` naming the problem.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfile import INPUT_NAME, signature
from service.errors import ServiceError
from service.models.registry import ServedModel

# The protocol's datatype names for the contract's element types.
DATATYPES = {"float32": "FP32", "bool": "BOOL"}
TENSORS = (*signature.SERVED, signature.IS_OOD)
OUTPUTS = {t.name: DATATYPES[t.dtype] for t in TENSORS}
_DTYPES = {t.name: t.dtype for t in TENSORS}
INPUT_DATATYPE = DATATYPES[signature.IMAGES.dtype]
_INPUT_DTYPE = np.dtype(signature.IMAGES.dtype).newbyteorder("<")
HEADER_LENGTH = "Inference-Header-Content-Length"


class V2Error(ServiceError):
    code = "invalid_inference_request"


# --- bodies ------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Body):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = Field(None, description="the tensor's elements, flat or nested, row-major")


class RequestOutput(_Body):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(_Body):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[float] | list[bool] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


# --- decoding and encoding ---------------------------------------------------------------------


def client_timeout_s(req: InferenceRequest) -> float | None:
    """Triton's per-request ``parameters.timeout`` (microseconds), in seconds; None when absent."""
    timeout_us = req.parameters.get("timeout")
    if timeout_us is None:
        return None
    if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us <= 0:
        raise V2Error(f"parameters.timeout must be a positive whole number of microseconds, got {timeout_us!r}")
    return timeout_us / 1e6


def decode_request(
    body: bytes, header_length: str | None, served: ServedModel, max_batch_size: int
) -> tuple[InferenceRequest, np.ndarray]:
    infer_request, binary = _parse_body(body, header_length)
    return infer_request, _images(infer_request, binary, served, max_batch_size)


def _parse_body(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        n = _header_length(header_length, len(body))
        json_part, binary = body[:n], body[n:]
    if not json_part:
        raise V2Error("the request body is empty; expected an inference request JSON object")
    try:
        document = json.loads(json_part)
    except (ValueError, RecursionError) as e:
        raise V2Error(f"the request body is not valid JSON: {e}") from None
    try:
        return InferenceRequest.model_validate(document), binary
    except ValidationError as e:
        problems = "; ".join(f"'{'.'.join(str(p) for p in err['loc']) or 'body'}': {err['msg']}" for err in e.errors())
        raise V2Error(f"not an inference request: {problems}") from None


def _header_length(value: str, body_length: int) -> int:
    """The JSON part's length from its header: ASCII digits only, at most the body's length."""
    shown = value if len(value) <= 40 else f"{value[:20]}... ({len(value):,} characters)"
    # str.isdigit() accepts '²' and other non-ASCII digits, which int() then refuses; and int()
    # refuses more than 4,300 digits. Any length longer than the body is wrong anyway.
    digits = value.strip().lstrip("0")
    if not (value.strip().isascii() and value.strip().isdigit()):
        raise V2Error(f"{HEADER_LENGTH} must be a number of bytes (ASCII digits), got {shown!r}")
    if len(digits) > len(str(body_length)) or not 0 < int(digits or "0") <= body_length:
        raise V2Error(f"{HEADER_LENGTH} is {shown!r}; it must be between 1 and the body's {body_length} bytes")
    return int(digits)


def _images(req: InferenceRequest, binary: bytes, served: ServedModel, max_batch_size: int) -> np.ndarray:
    names = [i.name for i in req.inputs]
    if names != [INPUT_NAME]:
        raise V2Error(f"model '{served.name}' takes exactly one input '{INPUT_NAME}'; got {names}")
    tensor = req.inputs[0]
    if tensor.datatype != INPUT_DATATYPE:
        raise V2Error(f"input '{INPUT_NAME}' must have datatype {INPUT_DATATYPE}, got {tensor.datatype!r}")
    c, h, w = served.runtime.input_shape
    shape = tensor.shape
    if len(shape) != 4 or shape[1:] != [c, h, w] or not 1 <= shape[0] <= max_batch_size:
        raise V2Error(
            f"input '{INPUT_NAME}' has shape {shape}; model '{served.name}' takes [N, {c}, {h}, {w}] "
            f"with 1 <= N <= {max_batch_size}"
        )
    count = math.prod(shape)
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if size != count * _INPUT_DTYPE.itemsize:
            raise V2Error(
                f"input '{INPUT_NAME}': binary_data_size is {size} bytes; shape {shape} in {INPUT_DATATYPE} takes "
                f"{count * _INPUT_DTYPE.itemsize}"
            )
        if len(binary) != size:
            raise V2Error(f"the body carries {len(binary)} bytes of binary tensor data; inputs declare {size}")
        array = np.frombuffer(binary, dtype=_INPUT_DTYPE).astype(signature.IMAGES.dtype)
    elif tensor.data is not None:
        if binary:
            raise V2Error(f"the body carries {len(binary)} bytes of binary data but no input declares any")
        array = _numbers(tensor.data)
        if array.size != count:
            raise V2Error(f"input '{INPUT_NAME}' has {array.size} elements in 'data'; shape {shape} needs {count}")
    else:
        raise V2Error(f"input '{INPUT_NAME}' has neither 'data' nor parameters.binary_data_size")
    array = array.reshape(shape)
    non_finite = int(np.count_nonzero(~np.isfinite(array)))
    if non_finite:
        raise V2Error(
            f"input '{INPUT_NAME}' holds {non_finite:,} value(s) that are NaN or infinite; "
            "it must hold preprocessed images: finite values in [0, 1]"
        )
    if array.min() < 0.0 or array.max() > 1.0:
        raise V2Error(
            f"input '{INPUT_NAME}' holds values in [{array.min():g}, {array.max():g}]; "
            "it must hold preprocessed images: finite values in [0, 1]"
        )
    return array


def _numbers(data: Any) -> np.ndarray:
    try:
        raw = np.asarray(data)
    except ValueError as e:  # ragged nesting
        raise V2Error(f"input '{INPUT_NAME}': 'data' is not a regular array of numbers ({e})") from None
    if raw.dtype.kind not in "fiu":
        raise V2Error(f"input '{INPUT_NAME}': 'data' must hold numbers, found {raw.dtype.kind!r}-kind values")
    return raw.astype(signature.IMAGES.dtype).ravel()


def requested_outputs(req: InferenceRequest) -> list[tuple[str, bool]]:
    default_binary = bool(req.parameters.get("binary_data_output", False))
    if req.outputs is None:
        return [(name, default_binary) for name in OUTPUTS]
    unknown = [o.name for o in req.outputs if o.name not in OUTPUTS]
    if unknown:
        raise V2Error(f"unknown output(s) {unknown}; this model has {list(OUTPUTS)}")
    return [(o.name, bool(o.parameters.get("binary_data", default_binary))) for o in req.outputs]


def encode_response(
    served: ServedModel, request_id: str | None, outputs: list[tuple[str, np.ndarray, bool]]
) -> Response:
    described, chunks = [], []
    for name, array, as_binary in outputs:
        entry: dict[str, Any] = {"name": name, "datatype": OUTPUTS[name], "shape": list(array.shape)}
        if as_binary:
            raw = array.astype(np.dtype(_DTYPES[name]).newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel().tolist()
        described.append(entry)
    header: dict[str, Any] = {"model_name": served.name, "model_version": served.version}
    if request_id is not None:
        header["id"] = request_id
    header["outputs"] = described
    if not chunks:
        return JSONResponse(header)
    head = json.dumps(header).encode()
    return Response(
        head + b"".join(chunks), media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(head))}
    )
