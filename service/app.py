"""The FastAPI app: wiring, health, model listing and metrics. ``uvicorn service.app:app`` serves it.

``create_app(settings)`` builds an independent app (own registry, metrics, thread pools), which is
what tests use; the module-level ``app`` is built from ``OODSERVE_*`` environment variables.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from service import admission, errors, predict, v2protocol, v2repository
from service.decodepool import DecodePool
from service.draining import Drain
from service.errors import ServiceError
from service.metrics import Metrics
from service.middleware import BodySizeLimit, DirectRoute, EarlyRefusal, RequestIdLogFilter, RequestMetrics
from service.registry import ModelRegistry, ServedModel
from service.repository import ModelRepository
from service.schemas import Liveness, ModelInfo, ModelList, Readiness, error_responses
from service.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Image classifiers that know when they don't know. `POST /predict` returns each image's label
together with an out-of-distribution score, its conformal p-value and the reject flag `is_ood`.
The Open Inference Protocol (v2) endpoints take preprocessed tensors for clients such as
`tritonclient`. Models are self-describing ONNX files; see `GET /models`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    _configure_logging(settings.log_level)
    metrics = Metrics()
    registry = ModelRegistry(settings)
    repository = ModelRepository(registry, settings, metrics)
    # Decoding holds the GIL only briefly (Pillow's codecs release it), so a few threads decode in
    # parallel with inference; the decode budget bounds what they can be made to allocate together.
    decode_pool = DecodePool(settings.decode_thread_count, settings.decode_memory_mb * 2**20, settings.max_decode_queue)
    drain = Drain(settings.drain_delay_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load before the worker accepts connections: several workers share one listening socket,
        # and a worker still loading must not take requests another worker could answer.
        await repository.start()  # and, in poll mode, follows the model directory from now on
        # What start-up built (modules, models, schemas) lives as long as the process: keeping it out of
        # the garbage collector's generations makes each full collection cost milliseconds, not tens.
        gc.freeze()
        drain.install()  # uvicorn's SIGTERM handler is in place by now; the drain wraps it
        try:
            yield
        finally:
            # Uvicorn calls this after it stopped accepting and every accepted request was answered.
            await repository.stop()
            await registry.close()
            decode_pool.shutdown()
            metrics.process_exiting()
            log.info("shut down")

    app = FastAPI(title="oodserve", version=v2protocol.server_version(), description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.repository = repository
    app.state.metrics = metrics
    app.state.decode_pool = decode_pool
    app.state.drain = drain
    errors.install(app)
    app.include_router(predict.router)
    app.include_router(router)
    app.include_router(v2protocol.router)
    app.include_router(v2repository.router)
    # The middleware added last is the outermost: RequestMetrics times and counts everything.
    [predict_route] = predict.router.routes
    app.add_middleware(
        DirectRoute, route=predict_route, endpoint=predict.predict, on_error=app.exception_handlers[ServiceError]
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    refuse = functools.partial(admission.refusal, registry)
    app.add_middleware(
        RequestMetrics, metrics=metrics, drain=drain, body_timeout_s=settings.body_timeout_s, refuse=refuse
    )
    # For python -m service's HTTP protocol (service/connections.py): refusing before the app runs.
    app.state.early_refusal = EarlyRefusal(refuse, metrics, paths=admission.EARLY_PATHS)
    return app


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
    registry: ModelRegistry = request.app.state.registry
    if draining := _draining(request):
        return draining
    body = Readiness(ready=registry.ready, models=sorted(registry.models), reason=registry.not_ready_reason())
    return JSONResponse(body.model_dump(), status_code=200 if registry.ready else 503)


def _draining(request: Request) -> JSONResponse | None:
    """After SIGTERM: not ready, so that load balancers stop sending while accepted work finishes."""
    if not request.app.state.drain.draining:
        return None
    registry: ModelRegistry = request.app.state.registry
    reason = "shutting down: finishing the accepted requests"
    return JSONResponse(Readiness(ready=False, models=sorted(registry.models), reason=reason).model_dump(), 503)


@router.get("/models", response_model=ModelList, summary="The served models and versions, and their metadata")
async def list_models(request: Request) -> ModelList:
    registry: ModelRegistry = request.app.state.registry
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
    registry: ModelRegistry = request.app.state.registry
    served = registry.get(name, version)
    request.state.model = served.name
    return _model_info(served, registry)


@router.get("/metrics", summary="Prometheus metrics (all workers)", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.exposition()
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
        recalibration=m.recalibration,
        evaluation=m.evaluation,
        providers=served.runtime.providers,
    )


def _configure_logging(level: str) -> None:
    """Give the service's loggers a handler of their own: uvicorn configures only its loggers."""
    logger = logging.getLogger("service")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.addFilter(RequestIdLogFilter())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
        logger.addHandler(handler)


app = create_app()
