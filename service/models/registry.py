"""The served models: for each model name, its loaded versions, each with its runtime and batcher;
and the model files that should be served but are not, with why.

Lookups (``get``) are for the routes; the changes (``install``, ``remove``, ``refuse``, ...) are
for the model sync (service/models/sync.py), which decides what is served. Replacing or
removing a version takes it out of the lookup at once; the retired version keeps its batcher until
the last request that looked it up has let go of it (it may still be decoding its images), so
requests already on their way to the old version finish on it. Then its batcher drains and its
session is released.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass

from modelfile import ModelMetadata
from service.errors import ServiceError
from service.models.directory import Origin
from service.models.runtime import ModelRuntime
from service.pipeline.batcher import Batcher
from service.settings import Settings

log = logging.getLogger(__name__)


class ModelNotFound(ServiceError):
    status = 404
    code = "model_not_found"


class ModelUnavailable(ServiceError):
    status = 503
    code = "model_unavailable"


class ServedModel:
    def __init__(self, name: str, version: str, origin: Origin, runtime: ModelRuntime, batcher: Batcher):
        self.name = name  # the layout's: its directory in NAME/VERSION/, the metadata's for a flat file
        self.version = version  # the directory's version (a positive whole number), not the metadata's
        self.origin = origin
        self.runtime = runtime
        self.metadata: ModelMetadata = runtime.metadata
        self.batcher = batcher
        # For `/models` (the page draws an upload's score against it), binned once here rather than per request.
        self.calibration_histogram = self.metadata.calibration.histogram()


@dataclass(frozen=True)
class RefusedFile:
    """A model file that failed the checks, and why (naming no filesystem path)."""

    source: str
    group: str
    why: str


def newest_first(versions: dict[str, ServedModel]) -> list[ServedModel]:
    return [versions[v] for v in sorted(versions, key=int, reverse=True)]


class ModelRegistry:
    """Name -> version -> served model, and why files that should be served are not."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._versions: dict[str, dict[str, ServedModel]] = {}
        self._refused: dict[str, RefusedFile] = {}  # by source
        self._files_found = 0
        self._loaded = False
        self._retiring: dict[int, Batcher] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # --- lookups ------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the first scan of the model directory is over."""
        return self._loaded

    @property
    def models(self) -> dict[str, ServedModel]:
        """Each model's default version: the newest one served."""
        return {name: newest_first(vs)[0] for name, vs in self._versions.items() if vs}

    def served(self) -> list[ServedModel]:
        return [m for _, vs in sorted(self._versions.items()) for m in newest_first(vs)]

    def versions_of(self, name: str) -> list[ServedModel]:
        """``name``'s served versions, newest first (none: an empty list)."""
        return newest_first(self._versions.get(name, {}))

    def refused_files(self, group: str | None = None) -> list[RefusedFile]:
        """The refused files (of one layout name, or all), in the order they were refused."""
        return [r for r in self._refused.values() if group is None or r.group == group]

    def is_refused(self, source: str) -> bool:
        return source in self._refused

    @property
    def failures(self) -> dict[str, str]:
        """Files not served and why (naming no filesystem path), plus what keeps the service not ready."""
        found = {r.source: r.why for r in self._refused.values()}
        if self._loaded and not self._files_found:
            found["model_dir"] = "the model directory holds no *.onnx model files"
        elif self._loaded and self.settings.default_model not in self._versions:
            found["default_model"] = (
                f"default model '{self.settings.default_model}' is not among the loaded models "
                f"({', '.join(sorted(self._versions)) or 'none'})"
            )
        return found

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """A refused file whose model has no version served keeps the service not ready (a
        half-deployed model set must not take traffic); a refused update of a served model does not."""
        if not self._loaded:
            return "models are still loading"
        groups = {m.origin.group for m in self.served()} | set(self._versions)
        blocking = [r.why for r in self._refused.values() if r.group not in groups]
        failures = self.failures
        blocking += [failures[k] for k in ("model_dir", "default_model") if k in failures]
        return "; ".join(blocking) or None

    def get(self, name: str | None, version: str | None = None) -> ServedModel:
        name = name or self.settings.default_model
        if versions := self._versions.get(name):
            if version is None:
                return newest_first(versions)[0]
            if version in versions:
                return versions[version]
            raise ModelNotFound(
                f"model '{name}' has no version '{version}' (serving {', '.join(sorted(versions, key=int))})"
            )
        if not self._loaded:
            raise ModelUnavailable(f"model '{name}' is not loaded yet; the service is starting")
        if why := [r.why for r in self.refused_files(name)]:
            raise ModelUnavailable(f"model '{name}' failed to load: {'; '.join(why)}")
        if not self._versions:  # nothing is served at all: the deployment's fault, not the request's
            raise ModelUnavailable(f"model '{name}' is not served: {self.not_ready_reason() or 'no models loaded'}")
        raise ModelNotFound(f"unknown model '{name}'; served models: {', '.join(sorted(self._versions))}")

    # --- changes, made by the model sync ----------------------------------------------------------

    def install(self, served: ServedModel) -> ServedModel | None:
        """Serve ``served`` from now on; the version it replaces (returned) is retired."""
        old = self._versions.setdefault(served.name, {}).get(served.version)
        self._versions[served.name][served.version] = served
        if old is not None:
            self._retire(old)
        return old

    def remove(self, served: ServedModel) -> None:
        versions = self._versions.get(served.name, {})
        if versions.get(served.version) is served:
            del versions[served.version]
            if not versions:
                del self._versions[served.name]
            self._retire(served)

    def refuse(self, refused: RefusedFile) -> None:
        self._refused[refused.source] = refused

    def forget(self, refused: RefusedFile) -> None:
        """Let a refused file be tried again."""
        self._refused.pop(refused.source, None)

    def count_files(self, found: int) -> None:
        """What the latest full scan of the model directory found (none: not ready)."""
        self._files_found = found

    def finish_loading(self) -> None:
        """The first scan is loaded: from now on a refused file no longer means "still starting"."""
        self._loaded = True

    # --- retiring batchers ----------------------------------------------------------------------

    def _retire(self, served: ServedModel) -> None:
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
