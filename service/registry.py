"""The served models: every ``*.onnx`` in the model directory, each with its runtime and batcher.

Models load during startup, before the worker takes connections. A file that fails to load keeps
the service not ready (a half-deployed model set must not take traffic) and is logged with its
name and the reason; the models that did load still answer requests that name them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.batcher import Batcher
from service.errors import ServiceError
from service.metrics import Metrics, ModelMetrics
from service.modelfile import InvalidModelFile, ModelMetadata
from service.runtime import ModelRuntime
from service.settings import Settings

log = logging.getLogger(__name__)


class ModelNotFound(ServiceError):
    status = 404
    code = "model_not_found"


class ModelUnavailable(ServiceError):
    status = 503
    code = "model_unavailable"


@dataclass(frozen=True)
class Verdicts:
    """The model's answer for ``n`` images, plus the reject decision from the calibration."""

    probabilities: np.ndarray  # [n, K]
    ood_score: np.ndarray  # [n]
    is_ood: np.ndarray  # [n] bool
    p_value: np.ndarray  # [n]


class ServedModel:
    def __init__(self, runtime: ModelRuntime, batcher: Batcher, metrics: ModelMetrics):
        self.runtime = runtime
        self.metadata: ModelMetadata = runtime.metadata
        self.name = self.metadata.name
        self.batcher = batcher
        self._metrics = metrics

    async def classify(self, images: np.ndarray, timeout_s: float) -> Verdicts:
        out = await self.batcher.submit(images, timeout_s)
        calibration = self.metadata.calibration
        scores = out["ood_score"]
        is_ood = scores > calibration.threshold
        p_values = calibration.p_values(scores)
        self._metrics.observe_verdicts(scores, p_values, is_ood)
        return Verdicts(out["probabilities"], scores, is_ood, p_values)


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self._metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.failures: dict[str, str] = {}  # file name -> why it is not served (naming the file)
        self.loaded = False

    @property
    def ready(self) -> bool:
        return self.loaded and not self.failures

    def not_ready_reason(self) -> str | None:
        if not self.loaded:
            return "models are still loading"
        if self.failures:
            return "; ".join(self.failures.values())
        return None

    def get(self, name: str | None) -> ServedModel:
        name = name or self.settings.default_model
        if name in self.models:
            return self.models[name]
        if not self.loaded:
            raise ModelUnavailable(f"model '{name}' is not loaded yet; the service is starting")
        if f"{name}.onnx" in self.failures:
            raise ModelUnavailable(f"model '{name}' failed to load: {self.failures[f'{name}.onnx']}")
        known = ", ".join(sorted(self.models)) or "none"
        raise ModelNotFound(f"unknown model '{name}'; served models: {known}")

    async def load(self) -> None:
        model_dir = self.settings.model_dir
        files = sorted(model_dir.glob("*.onnx")) if model_dir.is_dir() else []
        if not files:
            self.failures[str(model_dir)] = f"{model_dir}: no *.onnx model files in this directory"
        for path in files:
            try:
                await self._load_one(path)
            except InvalidModelFile as e:
                self.failures[path.name] = str(e)
                log.error("model file %s could not be loaded; the service stays NOT ready: %s", path, e)
            except Exception as e:  # a failure nobody foresaw: still this file's, and still logged
                self.failures[path.name] = f"{path.name}: {type(e).__name__}: {e}"
                log.exception("model file %s could not be loaded; the service stays NOT ready", path)
        if files and self.settings.default_model not in self.models:
            self.failures["default_model"] = (
                f"default model '{self.settings.default_model}' is not among the loaded models "
                f"({', '.join(sorted(self.models)) or 'none'})"
            )
        self.loaded = True
        if self.ready:
            log.info("ready: serving %s", ", ".join(sorted(self.models)))
        else:
            log.error("NOT ready: %s", self.not_ready_reason())

    async def _load_one(self, path: Path) -> None:
        s = self.settings

        def load() -> ModelRuntime:
            runtime = ModelRuntime(path, threads=s.intra_op_threads, providers=s.providers)
            runtime.warm_up(s.max_batch_size)
            return runtime

        runtime = await asyncio.to_thread(load)  # blocking onnxruntime work stays off the event loop
        name = runtime.metadata.name
        if name in self.models:
            raise InvalidModelFile(
                f"{path.name}: model name '{name}' is already served from {self.models[name].runtime.path.name}"
            )
        metrics = self._metrics.for_model(runtime.metadata)
        batcher = Batcher(
            name,
            runtime.run,
            metrics,
            max_batch_size=s.max_batch_size,
            max_delay_s=s.max_delay_ms / 1000,
            max_queue=s.max_queue,
        )
        batcher.start()
        self.models[name] = ServedModel(runtime, batcher, metrics)
        log.info(
            "loaded model '%s' version %s from %s: %s, %d classes, input %s, providers %s, %d threads",
            name,
            runtime.metadata.version,
            path.name,
            runtime.metadata.method,
            len(runtime.metadata.classes),
            runtime.input_shape,
            runtime.providers,
            s.intra_op_threads,
        )

    async def close(self) -> None:
        await asyncio.gather(*(m.batcher.close() for m in self.models.values()))
