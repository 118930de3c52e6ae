"""The served models: for each model name, its loaded versions, each with its runtime and batcher.

Lookups (``get``) and the verdicts live here; reading the model directory, loading, checking and
swapping versions in and out live in ``service/repository.py``. Replacing or removing a version
takes it out of the lookup at once; the retired version keeps its batcher until the last request
that looked it up has let go of it (it may still be decoding its images), so requests already on
their way to the old version finish on it. Then its batcher drains and its session is released.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from modelfile import ModelMetadata
from service.batcher import Announcement, Batcher, Outputs
from service.errors import ServiceError
from service.metrics import ModelMetrics
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


@dataclass(frozen=True)
class Origin:
    """Where a served version came from: the file (relative to the model directory) and its stamp."""

    source: str
    group: str  # the model name the layout gives: the directory of NAME/VERSION/, or a flat file's stem
    stamp: tuple[int, int, int]  # size, mtime_ns, inode: changes when the file is replaced


class ServedModel:
    def __init__(self, runtime: ModelRuntime, batcher: Batcher, metrics: ModelMetrics, version: str, origin: Origin):
        self.runtime = runtime
        self.metadata: ModelMetadata = runtime.metadata
        self.name = self.metadata.name
        self.version = version  # the repository's version (a positive whole number), not the metadata's
        self.origin = origin
        self.batcher = batcher
        self._metrics = metrics

    async def classify(self, images: np.ndarray, timeout_s: float, announced: Announcement | None = None) -> Verdicts:
        out = await self.batcher.submit(images, timeout_s, announced)
        return Verdicts(out["probabilities"], out["ood_score"], out["is_ood"], out["p_value"])

    def verdicts(self, probabilities: np.ndarray, scores: np.ndarray) -> Verdicts:
        return verdicts(self.metadata, self._metrics, probabilities, scores)


def inference_with_verdicts(runtime: ModelRuntime, metrics: ModelMetrics) -> Callable[[np.ndarray], Outputs]:
    """What a model's batcher runs: the model, then the verdicts for the whole batch at once (on the
    inference thread, once per batch rather than once per request)."""

    def infer(images: np.ndarray) -> Outputs:
        out = runtime.run(images)
        v = verdicts(runtime.metadata, metrics, out["probabilities"], out["ood_score"])
        return {"probabilities": v.probabilities, "ood_score": v.ood_score, "is_ood": v.is_ood, "p_value": v.p_value}

    return infer


def verdicts(metadata: ModelMetadata, metrics: ModelMetrics, probabilities: np.ndarray, scores: np.ndarray) -> Verdicts:
    """The reject decision, failing closed: a score that is not a finite number is OOD."""
    calibration = metadata.calibration
    finite = np.isfinite(scores)
    is_ood = calibration.is_ood(scores)
    p_values = np.where(finite, calibration.p_values(np.where(finite, scores, 0.0)), 0.0)
    if not finite.all():
        log.warning("model '%s' returned %d non-finite ood_score(s); flagged as OOD", metadata.name, (~finite).sum())
    # Histogram sums stay numbers: a NaN observed once would make them NaN for the process's life.
    metrics.observe_verdicts(scores[finite], p_values[finite], is_ood)
    return Verdicts(probabilities, scores, is_ood, p_values)


def newest_first(versions: dict[str, ServedModel]) -> list[ServedModel]:
    return [versions[v] for v in sorted(versions, key=int, reverse=True)]


class ModelRegistry:
    """Name -> version -> served model, and why files that should be served are not."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.versions: dict[str, dict[str, ServedModel]] = {}
        self.refused: dict[str, tuple[str, str]] = {}  # file -> (its group, why it is not served)
        self.files_found = 0
        self.loaded = False
        self._retiring: dict[int, Batcher] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def models(self) -> dict[str, ServedModel]:
        """Each model's default version: the newest one served."""
        return {name: newest_first(vs)[0] for name, vs in self.versions.items() if vs}

    def served(self) -> list[ServedModel]:
        return [m for _, vs in sorted(self.versions.items()) for m in newest_first(vs)]

    @property
    def failures(self) -> dict[str, str]:
        """Files not served and why (naming no filesystem path), plus what keeps the service not ready."""
        found = {source: why for source, (_, why) in self.refused.items()}
        if self.loaded and not self.files_found:
            found["model_dir"] = "the model directory holds no *.onnx model files"
        elif self.loaded and self.settings.default_model not in self.versions:
            found["default_model"] = (
                f"default model '{self.settings.default_model}' is not among the loaded models "
                f"({', '.join(sorted(self.versions)) or 'none'})"
            )
        return found

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """A refused file whose model has no version served keeps the service not ready (a
        half-deployed model set must not take traffic); a refused update of a served model does not."""
        if not self.loaded:
            return "models are still loading"
        groups = {m.origin.group for m in self.served()} | set(self.versions)
        blocking = [why for source, (group, why) in self.refused.items() if group not in groups]
        failures = self.failures
        blocking += [failures[k] for k in ("model_dir", "default_model") if k in failures]
        return "; ".join(blocking) or None

    def get(self, name: str | None, version: str | None = None) -> ServedModel:
        name = name or self.settings.default_model
        if versions := self.versions.get(name):
            if version is None:
                return newest_first(versions)[0]
            if version in versions:
                return versions[version]
            raise ModelNotFound(
                f"model '{name}' has no version '{version}' (serving {', '.join(sorted(versions, key=int))})"
            )
        if not self.loaded:
            raise ModelUnavailable(f"model '{name}' is not loaded yet; the service is starting")
        if why := [why for group, why in self.refused.values() if group == name]:
            raise ModelUnavailable(f"model '{name}' failed to load: {'; '.join(why)}")
        if not self.versions:  # nothing is served at all: the deployment's fault, not the request's
            raise ModelUnavailable(f"model '{name}' is not served: {self.not_ready_reason() or 'no models loaded'}")
        raise ModelNotFound(f"unknown model '{name}'; served models: {', '.join(sorted(self.versions))}")

    def install(self, served: ServedModel) -> None:
        """Serve ``served`` from now on; a version it replaces is retired."""
        old = self.versions.setdefault(served.name, {}).get(served.version)
        self.versions[served.name][served.version] = served
        if old is not None:
            self.retire(old)

    def remove(self, served: ServedModel) -> None:
        versions = self.versions.get(served.name, {})
        if versions.get(served.version) is served:
            del versions[served.version]
            if not versions:
                del self.versions[served.name]
            self.retire(served)

    def retire(self, served: ServedModel) -> None:
        """Close ``served``'s batcher once nothing refers to ``served`` any more: a request that
        looked it up before the swap still submits to it, and is answered by it."""
        batcher, name, version = served.batcher, served.name, served.version
        key = id(batcher)
        self._retiring[key] = batcher
        loop = asyncio.get_running_loop()

        def release() -> None:  # may run on any thread: where the last reference was dropped
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._close_retired, key, name, version)

        weakref.finalize(served, release)

    def _close_retired(self, key: int, name: str, version: str) -> None:
        batcher = self._retiring.pop(key, None)
        if batcher is None:
            return

        async def close() -> None:
            await batcher.close()  # answers what is still queued, then stops
            log.info("released model '%s' version %s: its last request is answered", name, version)

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        batchers = [m.batcher for m in self.served()] + list(self._retiring.values())
        self._retiring.clear()
        await asyncio.gather(*(b.close() for b in batchers), *self._closing)
