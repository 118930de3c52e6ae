"""``POST /predict``: uploaded images -> labels, OOD scores and the reject flag.

One image's path is a straight line: read the upload -> decode and resize on the decode pool ->
the model's batcher -> response model.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from service.errors import ServiceError
from service.imaging import FORMATS, ImageError, load_image
from service.registry import ModelRegistry, ServedModel, Verdicts
from service.schemas import Prediction, PredictResponse, error_responses
from service.settings import Settings

router = APIRouter()

_HOW_TO_SEND = (
    "send the image as multipart/form-data field 'file' (several as repeated 'files'), "
    "or as the raw request body with an image/* content type"
)

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": _HOW_TO_SEND.capitalize() + f". Formats: {', '.join(FORMATS)}.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
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
    }
}


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
async def predict(
    request: Request,
    model: Annotated[str | None, Query(description="model name; default: the configured default model")] = None,
    top_k: Annotated[
        int | None, Query(ge=1, description="return only the top_k most probable classes per image")
    ] = None,
) -> PredictResponse:
    started = time.monotonic()
    settings: Settings = request.app.state.settings
    registry: ModelRegistry = request.app.state.registry
    served = registry.get(model)
    request.state.model = served.name
    classes = served.metadata.classes
    if top_k is not None and top_k > len(classes):
        raise ServiceError(
            f"top_k={top_k} but model '{served.name}' has only {len(classes)} classes",
            code="invalid_parameter",
            status=422,
        )
    uploads = await _read_uploads(request, settings.max_files)
    images = await _decode(uploads, served, request)
    remaining = settings.deadline_ms / 1000 - (time.monotonic() - started)
    verdicts = await served.classify(images, max(remaining, 0.001))
    return PredictResponse(
        model=served.name,
        model_version=served.metadata.version,
        predictions=[
            _prediction(verdicts, i, classes, served.metadata.calibration.threshold, top_k, u.filename)
            for i, u in enumerate(uploads)
        ],
    )


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
        form = await request.form(max_files=max_files, max_fields=max_files)
    except HTTPException as e:  # how Starlette reports malformed multipart bodies and its limits
        too_many = str(e.detail).startswith("Too many files")
        raise ServiceError(
            f"malformed multipart body: {e.detail}" if not too_many else f"{e.detail} ({max_files} per request)",
            code="too_many_files" if too_many else "invalid_multipart",
            status=413 if too_many else 400,
        ) from None
    try:
        return await _uploads_in(form, max_files)
    finally:
        await form.close()  # deletes the spooled temporary files


async def _uploads_in(form: FormData, max_files: int) -> list[Upload]:
    parts = [*form.getlist("file"), *form.getlist("files")]
    if not parts:
        fields = ", ".join(f"'{k}'" for k in form) or "none"
        raise ServiceError(f"no image in the form (fields: {fields}); {_HOW_TO_SEND}", code="no_image")
    if len(parts) > max_files:
        raise ServiceError(
            f"{len(parts)} files in one request; the limit is {max_files}", code="too_many_files", status=413
        )
    uploads = []
    for i, part in enumerate(parts):
        if not isinstance(part, UploadFile):
            raise ServiceError(f"form field {i + 1} is text, not a file upload; {_HOW_TO_SEND}", code="no_image")
        uploads.append(Upload(part.filename, await part.read()))
    return uploads


async def _decode(uploads: list[Upload], served: ServedModel, request: Request) -> np.ndarray:
    settings: Settings = request.app.state.settings
    pool = request.app.state.decode_pool
    loop = asyncio.get_running_loop()
    spec = served.metadata.input

    async def one(i: int, upload: Upload) -> np.ndarray:
        try:
            return await loop.run_in_executor(pool, load_image, upload.data, spec, settings.max_pixels)
        except ImageError as e:
            if len(uploads) == 1 and upload.filename is None:
                raise
            raise ImageError(f"{upload.describe(i)}: {e.message}", code=e.code, status=e.status) from None

    return np.stack(await asyncio.gather(*(one(i, u) for i, u in enumerate(uploads))))


def _prediction(
    v: Verdicts, i: int, classes: list[str], threshold: float, top_k: int | None, filename: str | None
) -> Prediction:
    probs = v.probabilities[i]
    best = int(np.argmax(probs))
    if top_k is None:
        shown = {c: float(p) for c, p in zip(classes, probs.tolist(), strict=True)}
    else:
        order = np.argsort(-probs, kind="stable")[:top_k]
        shown = {classes[j]: float(probs[j]) for j in order}
    return Prediction(
        filename=filename,
        label=classes[best],
        class_index=best,
        confidence=float(probs[best]),
        probabilities=shown,
        ood_score=float(v.ood_score[i]),
        threshold=threshold,
        p_value=float(v.p_value[i]),
        is_ood=bool(v.is_ood[i]),
    )
