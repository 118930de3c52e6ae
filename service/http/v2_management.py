"""The HTTP side of model management: the Open Inference Protocol's model repository extension (Triton's,
which ``tritonclient`` speaks): ``POST /v2/repository/index``, ``POST /v2/repository/models/{name}/load`` and
``.../unload``; service/models/management.py does what they ask.

Off unless ``OODSERVE_MODEL_REPOSITORY_API`` is set, because it changes what is served: then every
path here answers 403. A load reads the model's files from the model directory, checks and warms
them up, and only then swaps them in; a file that fails leaves what was served serving and the
request gets 400 with the reason. Uploading a model (``config``/``files`` parameters) is refused.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from service.http import state
from service.http.errors import error_responses
from service.models import management
from service.models.management import ManagementError
from service.models.sync import ModelSync

router = APIRouter(prefix="/v2/repository", tags=["Open Inference Protocol v2: model repository"])


class IndexEntry(BaseModel):
    name: str
    version: str
    state: str = Field(description="`READY` when served, else `UNAVAILABLE`")
    reason: str = Field(description="why it is not served; empty when it is")


_ERRORS = error_responses(400, 403, 404, v2=True)


def _model_sync(request: Request) -> ModelSync:
    if not state.settings(request).model_repository_api:
        raise ManagementError(
            "the model repository extension is disabled; set OODSERVE_MODEL_REPOSITORY_API=true to enable it",
            code="repository_api_disabled",
            status=403,
        )
    return state.model_sync(request)


async def _parameters(request: Request) -> dict[str, Any]:
    """The request's ``parameters`` object; an empty body means none (tritonclient sends "" or {})."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ManagementError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(document, dict) or not isinstance(document.get("parameters", {}), dict):
        raise ManagementError('the request body must be a JSON object like {"parameters": {...}}')
    return document.get("parameters", {})


@router.post("/index", response_model=list[IndexEntry], responses=_ERRORS)
async def repository_index(request: Request) -> list[IndexEntry]:
    sync = _model_sync(request)
    body = await request.body()
    ready_only = False
    if body.strip():
        try:
            ready_only = bool(json.loads(body).get("ready", False))
        except (ValueError, RecursionError, AttributeError):
            raise ManagementError('the request body must be a JSON object like {"ready": true}') from None
    rows = [IndexEntry(**row) for row in management.index(sync)]
    return [row for row in rows if row.state == "READY" or not ready_only]


@router.post("/models/{name}/load", responses=_ERRORS)
async def load_model(request: Request, name: str) -> dict[str, Any]:
    sync = _model_sync(request)
    parameters = await _parameters(request)
    uploads = sorted(k for k in parameters if k == "config" or k.startswith("file:"))
    if uploads:
        raise ManagementError(
            f"loading from uploaded {', '.join(uploads)} is not supported; put the model file into the model "
            "directory and load it by name"
        )
    await management.load(sync, name)
    return {}


@router.post("/models/{name}/unload", responses=_ERRORS)
async def unload_model(request: Request, name: str) -> dict[str, Any]:
    sync = _model_sync(request)
    await _parameters(request)  # unload_dependents: oodserve's models have no dependents
    await management.unload(sync, name)
    return {}
