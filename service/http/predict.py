"""``POST /predict``: uploaded images -> labels, OOD scores and the reject flag.

One image's path is a straight line: read the upload -> admission (service/pipeline/admission.py) -> decode
and resize on the decode pool -> the model's batcher -> response. A request the model's queue has
no room for is refused (503 + Retry-After) by the request middleware before its body is read. The
response is built as plain data and serialised once (orjson); ``PredictResponse`` documents it in
the OpenAPI schema and tests check it against that.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.errors import ServiceError
from service.http import multipart, state
from service.http.errors import error_responses
from service.http.schemas import PredictResponse
from service.models.registry import ServedModel
from service.pipeline.admission import admit
from service.pipeline.deadline import Deadline
from service.pipeline.imaging import FORMATS, DecodeLimits, ImageError
from service.pipeline.verdicts import Verdicts

router = APIRouter()

_HOW_TO_SEND = (
    "send the image as multipart/form-data field 'file' (several as repeated 'files'), "
    "or as the raw request body with an image/* content type"
)

# The route reads its query parameters itself (FastAPI's parameter machinery cost ~40 us a request
# on this path), so the OpenAPI schema gets them from here.
_PARAMETERS = [
    {
        "name": "model",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "model name; default: the configured default model",
    },
    {
        "name": "version",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "model version; default: the newest served",
    },
    {
        "name": "top_k",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
        "description": "return only the top_k most probable classes per image",
    },
]

_BODY_DOC = {
    "parameters": _PARAMETERS,
    "requestBody": {
        "required": True,
        "description": _HOW_TO_SEND.capitalize() + f". Formats: {', '.join(FORMATS)}.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    # At least one of the two fields, and no other (both refused with 400).
                    "minProperties": 1,
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "one image"},
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "several images (repeat the field)",
                        },
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


def _top_k(value: str | None, served: ServedModel) -> int | None:
    if value is None:
        return None
    classes = len(served.metadata.classes)
    if not value.isdecimal() or not 1 <= int(value) <= classes:
        raise ServiceError(
            f"top_k must be a whole number from 1 to {classes} (model '{served.name}' has {classes} classes), "
            f"got {value[:40]!r}",
            code="invalid_parameter",
            status=422,
        )
    return int(value)


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes

    def describe(self, index: int) -> str:
        return f"file {index + 1} ({self.filename!r})" if self.filename else f"file {index + 1}"


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=error_responses(400, 404, 413, 415, 422, 503, 504),
    openapi_extra=_BODY_DOC,
    summary="Classify images and flag the ones the model should not be trusted on",
)
async def predict(request: Request) -> Response:
    settings = state.settings(request)
    query = request.query_params
    served = state.registry(request).get(query.get("model"), query.get("version"))
    request.state.model = served.name
    top_k = _top_k(query.get("top_k"), served)
    uploads = await _read_uploads(request, settings.max_files)
    # The deadline starts once the body is in: a slow upload is the client's time, not the server's.
    deadline = Deadline.after(settings.deadline_ms / 1000)
    with admit(served.batcher, len(uploads)) as admitted:
        images = await _decode(uploads, served, request, deadline)
        verdicts = await served.batcher.submit(images, deadline, admitted)
    m = served.metadata
    body = {
        "model": served.name,
        "model_version": served.version,
        "predictions": _predictions(verdicts, m.classes, m.calibration.threshold, top_k, uploads),
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def _read_uploads(request: Request, max_files: int) -> list[Upload]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type.startswith("image/"):
        return [Upload(None, await request.body())]
    if media_type != "multipart/form-data":
        shown = f"'{media_type}'" if media_type else "none"
        raise ServiceError(
            f"unsupported content type {shown}: {_HOW_TO_SEND}", code="unsupported_media_type", status=415
        )
    try:
        parts = multipart.parse(await request.body(), multipart.boundary_of(request.headers["content-type"]), max_files)
    except multipart.TooManyParts:
        raise ServiceError(
            f"more than {max_files} files in one request; the limit is {max_files}", code="too_many_files", status=413
        ) from None
    except multipart.MultipartError as e:
        raise ServiceError(f"malformed multipart body: {e}", code="invalid_multipart") from None
    return _uploads_in(parts)


def _uploads_in(parts: list[multipart.Part]) -> list[Upload]:
    fields = list(dict.fromkeys(p.name for p in parts))
    images = [p for p in parts if p.name == "file"] + [p for p in parts if p.name == "files"]
    if not images:
        shown = ", ".join(f"'{k}'" for k in fields) or "none"
        raise ServiceError(f"no image in the form (fields: {shown}); {_HOW_TO_SEND}", code="no_image")
    unknown = [k for k in fields if k not in ("file", "files")]
    if unknown:
        raise ServiceError(
            f"unknown form field(s) {', '.join(repr(k) for k in unknown)}; {_HOW_TO_SEND} (other options are "
            "query parameters)",
            code="unknown_field",
        )
    for i, part in enumerate(images):
        if part.filename is None:
            raise ServiceError(f"form field {i + 1} is text, not a file upload; {_HOW_TO_SEND}", code="no_image")
    return [Upload(p.filename, p.data) for p in images]


async def _decode(uploads: list[Upload], served: ServedModel, request: Request, deadline: Deadline) -> np.ndarray:
    settings = state.settings(request)
    pool = state.decode_pool(request)
    limits = DecodeLimits(settings.max_pixels, settings.max_image_side, settings.max_aspect_ratio)
    spec = served.metadata.input

    async def one(i: int, upload: Upload) -> np.ndarray:
        try:
            return await pool.load(upload.data, spec, limits, deadline)
        except ImageError as e:
            if len(uploads) == 1 and upload.filename is None:
                raise
            raise ImageError(f"{upload.describe(i)}: {e.message}", code=e.code, status=e.status) from None

    if len(uploads) == 1:  # most requests: no task to create, schedule and gather
        return (await one(0, uploads[0]))[None]
    tasks = [asyncio.ensure_future(one(i, u)) for i, u in enumerate(uploads)]
    try:
        return np.stack(await asyncio.gather(*tasks))
    finally:
        for task in tasks:  # one image failed: the others need not wait for memory or decode
            task.cancel()


def _predictions(
    v: Verdicts, classes: list[str], threshold: float, top_k: int | None, uploads: list[Upload]
) -> list[dict]:
    """``PredictResponse.predictions`` as plain data, every image's numbers converted in one go."""
    probabilities = v.probabilities.tolist()
    best = np.argmax(v.probabilities, axis=1).tolist()
    scores, p_values, is_ood = v.ood_score.tolist(), v.p_value.tolist(), v.is_ood.tolist()
    out = []
    for i, upload in enumerate(uploads):
        probs = probabilities[i]
        if top_k is None:
            shown = dict(zip(classes, probs, strict=True))
        else:
            order = np.argsort(-v.probabilities[i], kind="stable")[:top_k].tolist()
            shown = {classes[j]: probs[j] for j in order}
        out.append(
            {
                "filename": upload.filename,
                "label": classes[best[i]],
                "class_index": best[i],
                "confidence": probs[best[i]],
                "probabilities": shown,
                "ood_score": scores[i],
                "threshold": threshold,
                "p_value": p_values[i],
                "is_ood": is_ood[i],
            }
        )
    return out
