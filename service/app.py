"""The FastAPI app: its parts built and wired together. ``uvicorn service.app:app`` serves it.

``create_app(settings)`` builds an independent app (own registry, metrics, thread pools), which is
what tests use; the module-level ``app`` is built from ``OODSERVE_*`` environment variables.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from service.errors import ServiceError
from service.http import errors, pages, predict, state, status, v2_inference, v2_management
from service.http.draining import Drain
from service.http.middleware import BodySizeLimit, DirectRoute, RequestMetrics
from service.http.refusals import EARLY_PATHS, EarlyRefusal, refusal
from service.http.request_ids import RequestIdLogFilter
from service.metrics.prometheus import Metrics
from service.models.registry import ModelRegistry
from service.models.sync import ModelSync
from service.pipeline.decodepool import DecodePool
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
    model_sync = ModelSync(registry, settings, metrics)
    # Decoding holds the GIL only briefly (Pillow's codecs release it), so a few threads decode in
    # parallel with inference; the decode budget bounds what they can be made to allocate together.
    decode_pool = DecodePool(settings.decode_thread_count, settings.decode_memory_mb * 2**20, settings.max_decode_queue)
    drain = Drain(settings.drain_delay_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load before the worker accepts connections: several workers share one listening socket,
        # and a worker still loading must not take requests another worker could answer.
        await model_sync.start()  # and, in poll mode, follows the model directory from now on
        # What start-up built (modules, models, schemas) lives as long as the process: keeping it out of
        # the garbage collector's generations makes each full collection cost milliseconds, not tens.
        gc.freeze()
        drain.install()  # uvicorn's SIGTERM handler is in place by now; the drain wraps it
        try:
            yield
        finally:
            # Uvicorn calls this after it stopped accepting and every accepted request was answered.
            await model_sync.stop()
            await registry.close()
            decode_pool.shutdown()
            metrics.process_exiting()
            log.info("shut down")

    app = FastAPI(title="oodserve", version=v2_inference.server_version(), description=DESCRIPTION, lifespan=lifespan)
    check_refusal = functools.partial(refusal, registry)
    # For python -m service's HTTP protocol (service/http/connections.py): refusing before the app runs.
    early_refusal = EarlyRefusal(check_refusal, metrics, paths=EARLY_PATHS)
    state.attach(
        app,
        settings=settings,
        registry=registry,
        model_sync=model_sync,
        metrics=metrics,
        decode_pool=decode_pool,
        drain=drain,
        early_refusal=early_refusal,
    )
    errors.install(app)
    app.include_router(predict.router)
    app.include_router(status.router)
    app.include_router(v2_inference.router)
    app.include_router(v2_management.router)
    if settings.ui:
        app.include_router(pages.router())
    # The middleware added last is the outermost: RequestMetrics times and counts everything.
    [predict_route] = predict.router.routes
    app.add_middleware(
        DirectRoute, route=predict_route, endpoint=predict.predict, on_error=app.exception_handlers[ServiceError]
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(
        RequestMetrics, metrics=metrics, drain=drain, body_timeout_s=settings.body_timeout_s, refusal=check_refusal
    )
    return app


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
