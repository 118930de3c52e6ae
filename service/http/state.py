"""The app's state, typed: what ``create_app`` builds once and every route reads.

Routes take what they need with these accessors (``registry(request)``) rather than reading
``request.app.state`` and annotating it by hand.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp

from service.http.draining import Drain
from service.http.refusals import EarlyRefusal
from service.metrics.prometheus import Metrics
from service.models.registry import ModelRegistry
from service.models.sync import ModelSync
from service.pipeline.decodepool import DecodePool
from service.settings import Settings


def attach(
    app: FastAPI,
    *,
    settings: Settings,
    registry: ModelRegistry,
    model_sync: ModelSync,
    metrics: Metrics,
    decode_pool: DecodePool,
    drain: Drain,
    early_refusal: EarlyRefusal,
) -> None:
    state = app.state
    state.settings, state.registry, state.model_sync, state.metrics = settings, registry, model_sync, metrics
    state.decode_pool, state.drain, state.early_refusal = decode_pool, drain, early_refusal


def settings(request: Request) -> Settings:
    return request.app.state.settings


def registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def model_sync(request: Request) -> ModelSync:
    return request.app.state.model_sync


def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def decode_pool(request: Request) -> DecodePool:
    return request.app.state.decode_pool


def drain(request: Request) -> Drain:
    return request.app.state.drain


def early_refusal(app: ASGIApp) -> EarlyRefusal | None:
    """The app's :class:`EarlyRefusal`, found under the wrappers a server puts around the app."""
    for _ in range(8):  # uvicorn wraps the app in a middleware or two, each keeping it as `.app`
        state = getattr(app, "state", None)
        if state is not None:
            return getattr(state, "early_refusal", None)
        app = getattr(app, "app", None)
    return None
