"""The service's own small routes: liveness, readiness (503 while loading or draining), the served
models and their metadata, and the Prometheus metrics of all workers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from service.http import state
from service.http.errors import error_responses
from service.http.schemas import Liveness, ModelInfo, ModelList, Readiness
from service.models.registry import ModelRegistry, ServedModel

router = APIRouter()


@router.get("/healthz", response_model=Liveness, summary="Liveness: the process answers")
async def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="Readiness: every model loaded and warmed up",
)
async def readyz(request: Request) -> JSONResponse:
    registry = state.registry(request)
    if draining := _draining(request):
        return draining
    body = Readiness(ready=registry.ready, models=sorted(registry.models), reason=registry.not_ready_reason())
    return JSONResponse(body.model_dump(), status_code=200 if registry.ready else 503)


def _draining(request: Request) -> JSONResponse | None:
    """After SIGTERM: not ready, so that load balancers stop sending while accepted work finishes."""
    if not state.drain(request).draining:
        return None
    registry = state.registry(request)
    reason = "shutting down: finishing the accepted requests"
    return JSONResponse(Readiness(ready=False, models=sorted(registry.models), reason=reason).model_dump(), 503)


@router.get("/models", response_model=ModelList, summary="The served models and versions, and their metadata")
async def list_models(request: Request) -> ModelList:
    registry = state.registry(request)
    return ModelList(
        default_model=registry.settings.default_model,
        models=[_model_info(m, registry) for m in registry.served()],
        failures=registry.failures,
    )


@router.get(
    "/models/{name}",
    response_model=ModelInfo,
    responses=error_responses(404, 503),
    summary="One model's metadata (its newest version, or `version`)",
)
async def get_model(
    request: Request,
    name: str,
    version: Annotated[str | None, Query(description="model version; default: the newest served")] = None,
) -> ModelInfo:
    registry = state.registry(request)
    served = registry.get(name, version)
    request.state.model = served.name
    return _model_info(served, registry)


@router.get("/metrics", summary="Prometheus metrics (all workers)", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    body, content_type = state.metrics(request).exposition()
    return Response(body, media_type=content_type)


def _model_info(served: ServedModel, registry: ModelRegistry) -> ModelInfo:
    m = served.metadata
    return ModelInfo(
        name=served.name,
        version=served.version,
        default=served.name == registry.settings.default_model and served is registry.models[served.name],
        model_version=m.version,
        source=served.origin.source,
        method=m.method,
        score=m.score,
        dataset=m.dataset,
        architecture=m.architecture,
        created=m.created,
        precision=m.precision,
        quantized_from=m.quantized_from,
        classes=m.classes,
        input=m.input,
        threshold=m.calibration.threshold,
        tpr=m.calibration.tpr,
        calibration_split=m.calibration.split,
        calibration_images=m.calibration.n,
        calibration_histogram=served.calibration_histogram,
        recalibration=m.recalibration,
        posthoc=m.posthoc,
        training_negatives=m.training_negatives,
        evaluation=m.evaluation,
        providers=served.runtime.providers,
    )
