"""The Open Inference Protocol (v2, KServe/Triton REST), including the binary tensor extension.

Clients send the preprocessed ``images`` tensor (FP32 ``[N, C, H, W]`` in [0, 1]) and get back
``probabilities`` (FP32 ``[N, K]``), ``ood_score`` (FP32 ``[N]``) and ``is_ood`` (BOOL ``[N]``).
Tensors travel as JSON ``data`` or, as the stock ``tritonclient.http`` sends them by default, as
raw little-endian bytes after the JSON header (``Inference-Header-Content-Length`` says where the
JSON ends, ``parameters.binary_data_size`` how many bytes each tensor takes). Errors are
``{"error": "..."}`` as the protocol says.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from modelfile import signature
from service.errors import DeadlineExceeded
from service.http import state
from service.http.errors import error_responses
from service.http.schemas import inline_defs
from service.http.v2_codec import (
    DATATYPES,
    HEADER_LENGTH,
    TENSORS,
    InferenceRequest,
    InferenceResponse,
    V2Error,
    client_timeout_s,
    decode_request,
    encode_response,
    requested_outputs,
)
from service.models.registry import ServedModel
from service.pipeline.admission import admit
from service.pipeline.deadline import Deadline

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])


def server_version() -> str:
    try:
        return version("oodserve")
    except PackageNotFoundError:
        return "unknown"


# --- metadata bodies ------------------------------------------------------------------------------------


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks the dynamic batch dimension")


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


_ERRORS = error_responses(400, 404, 413, 503, 504, v2=True)


# --- routes ------------------------------------------------------------------------------------


def _model(request: Request, name: str, model_version: str | None = None) -> ServedModel:
    served = state.registry(request).get(name, model_version)
    request.state.model = served.name
    return served


@router.get("", response_model=ServerMetadataResponse)
async def server_metadata(request: Request) -> ServerMetadataResponse:
    settings = state.settings(request)
    extensions = ["binary_tensor_data"] + (["model_repository"] if settings.model_repository_api else [])
    return ServerMetadataResponse(name="oodserve", version=server_version(), extensions=extensions)


@router.get("/health/live", response_model=Live)
async def server_live() -> Live:
    return Live(live=True)


@router.get("/health/ready", response_model=Ready, responses={503: _ERRORS[503]})
async def server_ready(request: Request) -> Ready:
    registry = state.registry(request)
    if not registry.ready:
        raise V2Error(f"not ready: {registry.not_ready_reason()}", status=503, code="not_ready")
    return Ready(ready=True)


@router.get("/models/{name}", response_model=ModelMetadataResponse, responses={404: _ERRORS[404]})
@router.get(
    "/models/{name}/versions/{model_version}", response_model=ModelMetadataResponse, responses={404: _ERRORS[404]}
)
async def model_metadata(request: Request, name: str, model_version: str | None = None) -> ModelMetadataResponse:
    served = _model(request, name, model_version)
    c, h, w = served.runtime.input_shape
    sizes = {"batch": -1, "channels": c, "height": h, "width": w, "classes": len(served.metadata.classes)}
    return ModelMetadataResponse(
        name=served.name,
        versions=[m.version for m in state.registry(request).versions_of(served.name)],
        platform="onnxruntime_onnx",
        inputs=[_described(signature.IMAGES, sizes)],
        outputs=[_described(t, sizes) for t in TENSORS],
    )


@router.get("/models/{name}/ready", response_model=ModelReady, responses={404: _ERRORS[404]})
@router.get("/models/{name}/versions/{model_version}/ready", response_model=ModelReady, responses={404: _ERRORS[404]})
async def model_ready(request: Request, name: str, model_version: str | None = None) -> ModelReady:
    served = _model(request, name, model_version)
    return ModelReady(name=served.name, ready=True)


_INFER_DOC = {
    "requestBody": {
        "required": True,
        "description": "JSON, or JSON followed by raw tensor bytes (binary tensor extension; set the "
        f"`{HEADER_LENGTH}` header to the JSON's length)",
        "content": {
            "application/json": {"schema": inline_defs(InferenceRequest.model_json_schema())},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/models/{name}/infer",
    response_model=InferenceResponse,
    openapi_extra=_INFER_DOC,
    responses=_ERRORS,
)
@router.post(
    "/models/{name}/versions/{model_version}/infer",
    response_model=InferenceResponse,
    openapi_extra=_INFER_DOC,
    responses=_ERRORS,
)
async def infer(request: Request, name: str, model_version: str | None = None) -> Response:
    settings = state.settings(request)
    served = _model(request, name, model_version)
    body = await request.body()
    # The deadline starts once the body is in: a slow upload is the client's time, not the server's.
    deadline = Deadline.after(settings.deadline_ms / 1000)
    # Parsing megabytes of JSON numbers is CPU work: keep it off the event loop, like image decoding.
    infer_request, images = await state.decode_pool(request).run(
        decode_request, deadline, body, request.headers.get(HEADER_LENGTH), served, settings.max_batch_size
    )
    wanted = requested_outputs(infer_request)
    own_timeout_s = client_timeout_s(infer_request)
    answer_by = deadline.capped(own_timeout_s)  # the client's own timeout counts from the same instant
    try:
        with admit(served.batcher, len(images)) as admitted:
            verdicts = await served.batcher.submit(images, answer_by, admitted)
    except DeadlineExceeded as e:
        if answer_by is not deadline:
            raise V2Error(
                f"the request's own timeout expired (parameters.timeout = {own_timeout_s * 1e6:,.0f} µs) "
                f"before model '{served.name}' answered",
                code="client_timeout",
                status=504,
            ) from None
        raise V2Error(e.message, code=e.code, status=e.status) from None

    values = verdicts.tensors()
    return encode_response(served, infer_request.id, [(n, values[n], as_binary) for n, as_binary in wanted])


def _described(tensor: signature.Tensor, sizes: dict[str, int]) -> TensorMetadata:
    return TensorMetadata(name=tensor.name, datatype=DATATYPES[tensor.dtype], shape=list(tensor.shape(sizes)))
