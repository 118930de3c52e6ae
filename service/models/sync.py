"""The model sync: keeps the registry equal to what the model directory holds and the version
policy wants (service/models/directory.py), loading through service/models/loading.py.

Of each model the newest ``model_versions`` versions that pass the checks are served; a request
that names no version gets the newest one served. A version is loaded, checked and warmed up off
the event loop *before* it enters the registry, so it takes traffic only when it can answer; a file
that fails leaves what was served before serving, and says why (log, ``/models``'s ``failures``,
``oodserve_model_loads_total{result="refused"}``). A refused file is not retried until it changes
(size, mtime or inode).

``sync`` converges the registry on the directory: at startup, every ``model_poll_s`` seconds in
poll mode, and for one model on model management's ``load`` (service/models/management.py). Each worker process has its
own registry and converges on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from modelfile import InvalidModelFile
from service.metrics.prometheus import Metrics
from service.models.directory import ModelFile, Origin, newest, scan
from service.models.loading import open_runtime, served_name, why_refused, wire
from service.models.registry import ModelRegistry, RefusedFile, ServedModel
from service.settings import Settings

log = logging.getLogger(__name__)


class ModelSync:
    def __init__(self, registry: ModelRegistry, settings: Settings, metrics: Metrics):
        self.registry = registry
        self.settings = settings
        self._metrics = metrics
        # Models unloaded through model management -> the layout's names of their files, which
        # polls leave alone until the model is loaded again.
        self._unloaded: dict[str, set[str]] = {}
        self._refused_stamps: dict[str, tuple[int, int, int]] = {}  # a refused file is retried once it changes
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sync()
        self.registry.finish_loading()
        if self.registry.ready:
            log.info("ready: serving %s", ", ".join(f"{m.name} v{m.version}" for m in self.registry.served()))
        else:
            log.error("NOT ready: %s", self.registry.not_ready_reason())
        if self.settings.model_poll_s > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="model-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self.sync()
            except Exception:  # the poll must outlive a surprise; what is served stays served
                log.exception("polling the model directory failed; trying again in %g s", self.settings.model_poll_s)

    async def sync(self, only: str | None = None) -> None:
        """Load what is new or changed, retire what the policy or the directory no longer has.
        ``only``: just this model (its directory, or the flat files serving or named after it), and
        its refused files are tried again even when they did not change."""
        async with self._lock:
            files = await asyncio.to_thread(scan, self.settings.model_dir)
            if only is None:
                self.registry.count_files(len(files))
            in_scope = self._scope(only)
            self._forget_refused(files, in_scope, retry=only is not None)
            wanted = await self._load_wanted([f for f in files if in_scope(f.origin.group)])
            for served in self.registry.served():
                if in_scope(served.origin.group) and served.origin not in wanted:
                    self._unload(served, "it is no longer in the model directory or its version policy")

    def _scope(self, only: str | None) -> Callable[[str], bool]:
        if only is None:
            held = self.unloaded_groups
            return lambda group: group not in held
        groups = {only} | {m.origin.group for m in self.registry.versions_of(only)}
        return lambda group: group in groups

    def _forget_refused(self, files: list[ModelFile], in_scope: Callable[[str], bool], *, retry: bool) -> None:
        on_disk = {f.origin.source: f.origin.stamp for f in files}
        for refused in self.registry.refused_files():
            changed = self._refused_stamps.get(refused.source) != on_disk.get(refused.source)
            if in_scope(refused.group) and (retry or changed):
                self.registry.forget(refused)

    async def _load_wanted(self, files: list[ModelFile]) -> set[Origin]:
        """Load the newest versions the policy wants, falling back past refused ones; their origins."""
        candidates = [f for f in files if not self.registry.is_refused(f.origin.source)]
        while True:
            wanted = newest(candidates, self.settings.model_versions)
            served = {m.origin for m in self.registry.served()}
            refused = [f for f in wanted if f.origin not in served and not await self._load(f)]
            if not refused:
                return {f.origin for f in wanted}
            candidates = [f for f in candidates if f not in refused]

    async def _load(self, f: ModelFile) -> bool:
        try:
            runtime = await open_runtime(f, self.settings)
            name = served_name(f, runtime)
            already = next((m for m in self.registry.versions_of(name) if m.version == f.version), None)
            if already is not None and already.origin.source != f.origin.source:
                raise InvalidModelFile(
                    f"{f.origin.source}: model name '{name}' is already served from {already.origin.source}"
                )
        except Exception as e:
            self._refuse(f, why_refused(f, e), unforeseen=not isinstance(e, InvalidModelFile))
            return False
        served = wire(f, name, runtime, self.settings, self._metrics)
        replaced = self.registry.install(served)
        self._metrics.model_loads.labels(served.name, "loaded").inc()
        log.info(
            "serving model '%s' version %s from %s%s: %s, %d classes, input %s, providers %s, %d threads",
            served.name,
            served.version,
            f.origin.source,
            " (replacing the version served before)" if replaced is not None else "",
            served.metadata.method,
            len(served.metadata.classes),
            served.runtime.input_shape,
            served.runtime.providers,
            self.settings.intra_op_threads,
        )
        return True

    def _refuse(self, f: ModelFile, why: str, *, unforeseen: bool = False) -> None:
        self.registry.refuse(RefusedFile(f.origin.source, f.origin.group, why))
        self._refused_stamps[f.origin.source] = f.origin.stamp
        self._metrics.model_loads.labels(f.origin.group, "refused").inc()
        keeps = "what was served before keeps serving" if self.registry.loaded else "the service stays NOT ready"
        log.error("model file %s could not be loaded; %s: %s", f.path, keeps, why, exc_info=unforeseen)

    def _unload(self, served: ServedModel, why: str) -> None:
        self.registry.remove(served)
        self._metrics.model_loads.labels(served.name, "unloaded").inc()
        log.info("unloading model '%s' version %s (%s): %s", served.name, served.version, served.origin.source, why)

    # --- for model management (service/models/management.py) ------------------------------------

    @property
    def unloaded_groups(self) -> set[str]:
        return set().union(*self._unloaded.values())

    async def load(self, name: str) -> None:
        """Load (or reload) one model from the directory; what fails leaves the old version serving."""
        groups = self._unloaded.pop(name, set())
        await self.sync(only=name)
        for group in groups - {name}:  # a flat file named other than its model
            await self.sync(only=group)

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; polls leave its files alone until it is loaded again."""
        async with self._lock:
            groups = self._unloaded.setdefault(name, {name})
            for served in [m for m in self.registry.served() if name in (m.name, m.origin.group)]:
                groups.add(served.origin.group)
                self._unload(served, "unloaded through the repository API")
            for refused in self.registry.refused_files(name):
                self.registry.forget(refused)
