"""One model file made servable: its onnxruntime session opened, checked and warmed up off the event
loop, the name it is served under, and its wiring (metrics, verdicts, batcher).

Everything that can fail here fails before anything is wired, as :class:`InvalidModelFile` with a
message that names the file as the model directory has it, never a filesystem path.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelfile import InvalidModelFile, signature
from service.metrics.prometheus import Metrics, ModelMetrics
from service.models.directory import ModelFile
from service.models.registry import ServedModel
from service.models.runtime import ModelRuntime
from service.pipeline.batcher import Batcher
from service.pipeline.verdicts import Verdicts, judge
from service.settings import Settings

log = logging.getLogger(__name__)


async def open_runtime(f: ModelFile, settings: Settings) -> ModelRuntime:
    def load() -> ModelRuntime:
        runtime = ModelRuntime(f.path, threads=settings.intra_op_threads, providers=settings.providers)
        runtime.warm_up(settings.max_batch_size)
        return runtime

    return await asyncio.to_thread(load)  # blocking onnxruntime work stays off the event loop


def served_name(f: ModelFile, runtime: ModelRuntime) -> str:
    """In NAME/VERSION/ the directory names the model, as in Triton: a bundled file copied to
    ``digits/1/model.onnx`` is served as ``digits``. A flat file is named by its metadata."""
    named = runtime.metadata.name
    if f.flat or named == f.origin.group:
        return named
    log.warning(
        "model file %s: its metadata names the model '%s'; serving it as '%s', as its directory says",
        f.origin.source,
        named,
        f.origin.group,
    )
    return f.origin.group


def wire(f: ModelFile, name: str, runtime: ModelRuntime, settings: Settings, metrics: Metrics) -> ServedModel:
    """The served model: its metrics, and a started batcher that runs it and judges the batch."""
    model_metrics = metrics.for_model(runtime.metadata, name)
    batcher = Batcher(
        name,
        _inference_with_verdicts(name, runtime, model_metrics),
        model_metrics,
        max_batch_size=settings.max_batch_size,
        max_delay_s=settings.max_delay_ms / 1000,
        max_queue=settings.max_queue,
        wait_when_idle=settings.batch_wait_when_idle,
    )
    batcher.start()
    return ServedModel(name, f.version, f.origin, runtime, batcher)


def _inference_with_verdicts(
    name: str, runtime: ModelRuntime, metrics: ModelMetrics
) -> Callable[[np.ndarray], Verdicts]:
    """What a model's batcher runs: the model, then the verdicts for the whole batch at once (on the
    inference thread, once per batch rather than once per request)."""
    calibration = runtime.metadata.calibration

    def infer(images: np.ndarray) -> Verdicts:
        out = runtime.run(images)
        return judge(name, calibration, metrics, out[signature.PROBABILITIES.name], out[signature.OOD_SCORE.name])

    return infer


def why_refused(f: ModelFile, e: Exception) -> str:
    """What clients and the log are told about a file that failed: its source, never a path."""
    if not isinstance(e, InvalidModelFile):  # a failure nobody foresaw: still this file's
        return _without_paths(f"{f.origin.source}: {type(e).__name__}: {e}", f.path)
    # The runtime's messages name the file; in NAME/VERSION/model.onnx that is not enough.
    why = _without_paths(str(e), f.path)
    if not why.startswith(f"{f.origin.source}: "):
        why = f"{f.origin.source}: {why.removeprefix(f'{f.path.name}: ')}"
    return why


# An absolute path (two or more components): replaced by its last component in what clients see.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"():,;]+/)+([^\s/'\"():,;]+)")


def _without_paths(message: str, path: Path) -> str:
    """``message`` with the model file's path (and any other absolute path) reduced to a name."""
    for shown in {str(path.resolve()), str(path.absolute()), str(path)}:
        message = message.replace(shown, path.name)
    return _ABSOLUTE_PATH.sub(r"\1", message)
