"""The model repository: the model directory's files, loaded, checked and swapped into the registry.

Layout (Triton's, plus the flat files oodserve always served):

    models/NAME/VERSION/model.onnx    VERSION a positive whole number
    models/NAME.onnx                  version 1 of the model its metadata names

Version policy: of each model, the newest ``model_versions`` versions (0: all) that pass the checks
are served; a request that names no version gets the newest one served. A version is loaded,
checked and warmed up off the event loop *before* it enters the registry, so it takes traffic only
when it can answer; a file that fails leaves what was served before serving, and says why (log,
``/models``'s ``failures``, ``oodserve_model_loads_total{result="refused"}``). A refused file is not
retried until it changes (size, mtime or inode).

``sync`` converges the registry on the directory: at startup, every ``model_poll_s`` seconds in
poll mode, and for one model on the repository extension's ``load``. Each worker process has its
own registry and converges on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from modelfile import InvalidModelFile
from service.batcher import Batcher
from service.metrics import Metrics
from service.registry import ModelRegistry, Origin, ServedModel, inference_with_verdicts
from service.runtime import ModelRuntime
from service.settings import Settings

log = logging.getLogger(__name__)

VERSION_FILE = "model.onnx"


@dataclass(frozen=True)
class ModelFile:
    path: Path
    version: str
    origin: Origin
    flat: bool  # NAME.onnx: named by its metadata, not by a directory


def scan(model_dir: Path) -> list[ModelFile]:
    """Every model file in the directory, in a stable order."""
    if not model_dir.is_dir():
        return []
    found = []
    for path in sorted(model_dir.glob("*.onnx")):
        found.append(_model_file(path, model_dir, path.stem, "1", flat=True))
    for path in sorted(model_dir.glob(f"*/*/{VERSION_FILE}")):
        version = path.parent.name
        if version.isascii() and version.isdigit() and int(version) > 0:
            found.append(_model_file(path, model_dir, path.parent.parent.name, str(int(version)), flat=False))
    return [f for f in found if f is not None]


def _model_file(path: Path, model_dir: Path, group: str, version: str, *, flat: bool) -> ModelFile | None:
    try:
        st = path.stat()
    except OSError:  # removed between the listing and now
        return None
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    return ModelFile(path, version, Origin(str(path.relative_to(model_dir)), group, stamp), flat)


class ModelRepository:
    def __init__(self, registry: ModelRegistry, settings: Settings, metrics: Metrics):
        self.registry = registry
        self.settings = settings
        self._metrics = metrics
        self._loads = Counter(
            "oodserve_model_loads",
            "Model versions loaded into service, refused by the checks, or unloaded",
            ["model", "result"],
            registry=metrics.registry,
        )
        # Models unloaded through the repository extension -> the layout's names of their files, which
        # polls leave alone until the model is loaded again.
        self._unloaded: dict[str, set[str]] = {}
        self._refused_stamps: dict[str, tuple[int, int, int]] = {}  # a refused file is retried once it changes
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sync()
        self.registry.loaded = True
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
                self.registry.files_found = len(files)
            in_scope = self._scope(only)
            self._forget_refusals(files, in_scope, retry=only is not None)
            wanted = await self._load_wanted([f for f in files if in_scope(f.origin.group)])
            for served in self.registry.served():
                if in_scope(served.origin.group) and served.origin not in wanted:
                    self._unload(served, "it is no longer in the model directory or its version policy")

    def _scope(self, only: str | None) -> Callable[[str], bool]:
        if only is None:
            held = self.unloaded_groups
            return lambda group: group not in held
        groups = {only} | {m.origin.group for m in self.registry.versions.get(only, {}).values()}
        return lambda group: group in groups

    def _forget_refusals(self, files: list[ModelFile], in_scope: Callable[[str], bool], *, retry: bool) -> None:
        on_disk = {f.origin.source: f.origin.stamp for f in files}
        for source, (group, _) in list(self.registry.refused.items()):
            if in_scope(group) and (retry or self._refused_stamps.get(source) != on_disk.get(source)):
                del self.registry.refused[source]

    async def _load_wanted(self, files: list[ModelFile]) -> set[Origin]:
        """Load the newest versions the policy wants, falling back past refused ones; their origins."""
        candidates = [f for f in files if f.origin.source not in self.registry.refused]
        while True:
            wanted = self._newest(candidates)
            served = {m.origin for m in self.registry.served()}
            refused = [f for f in wanted if f.origin not in served and not await self._load(f)]
            if not refused:
                return {f.origin for f in wanted}
            candidates = [f for f in candidates if f not in refused]

    def _newest(self, files: list[ModelFile]) -> list[ModelFile]:
        keep = self.settings.model_versions
        by_group: dict[str, list[ModelFile]] = {}
        for f in files:
            by_group.setdefault(f.origin.group, []).append(f)
        chosen = []
        for group in by_group.values():
            group.sort(key=lambda f: (-int(f.version), f.origin.source))
            chosen += group[:keep] if keep else group
        return sorted(chosen, key=lambda f: f.origin.source)

    async def _load(self, f: ModelFile) -> bool:
        try:
            served = await self._build(f)
        except InvalidModelFile as e:
            # The runtime's messages name the file; in NAME/VERSION/model.onnx that is not enough.
            why = _without_paths(str(e), f.path)
            if not why.startswith(f"{f.origin.source}: "):
                why = f"{f.origin.source}: {why.removeprefix(f'{f.path.name}: ')}"
            self._refuse(f, why)
            return False
        except Exception as e:  # a failure nobody foresaw: still this file's, and still logged
            self._refuse(f, _without_paths(f"{f.origin.source}: {type(e).__name__}: {e}", f.path), unforeseen=True)
            return False
        replaced = self.registry.versions.get(served.name, {}).get(served.version)
        self.registry.install(served)
        self._loads.labels(served.name, "loaded").inc()
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

    async def _build(self, f: ModelFile) -> ServedModel:
        s = self.settings

        def load() -> ModelRuntime:
            runtime = ModelRuntime(f.path, threads=s.intra_op_threads, providers=s.providers)
            runtime.warm_up(s.max_batch_size)
            return runtime

        runtime = await asyncio.to_thread(load)  # blocking onnxruntime work stays off the event loop
        name = runtime.metadata.name
        if not f.flat and name != f.origin.group:
            raise InvalidModelFile(
                f"{f.origin.source}: the metadata names the model '{name}' but its directory is '{f.origin.group}'"
            )
        served = self.registry.versions.get(name, {}).get(f.version)
        if served is not None and served.origin.source != f.origin.source:
            raise InvalidModelFile(
                f"{f.origin.source}: model name '{name}' is already served from {served.origin.source}"
            )
        metrics = self._metrics.for_model(runtime.metadata)
        batcher = Batcher(
            name,
            inference_with_verdicts(runtime, metrics),
            metrics,
            max_batch_size=s.max_batch_size,
            max_delay_s=s.max_delay_ms / 1000,
            max_queue=s.max_queue,
            wait_when_idle=s.batch_wait_when_idle,
        )
        batcher.start()
        return ServedModel(runtime, batcher, metrics, f.version, f.origin)

    def _refuse(self, f: ModelFile, why: str, *, unforeseen: bool = False) -> None:
        self.registry.refused[f.origin.source] = (f.origin.group, why)
        self._refused_stamps[f.origin.source] = f.origin.stamp
        self._loads.labels(f.origin.group, "refused").inc()
        keeps = "what was served before keeps serving" if self.registry.loaded else "the service stays NOT ready"
        log.error("model file %s could not be loaded; %s: %s", f.path, keeps, why, exc_info=unforeseen)

    def _unload(self, served: ServedModel, why: str) -> None:
        self.registry.remove(served)
        self._loads.labels(served.name, "unloaded").inc()
        log.info("unloading model '%s' version %s (%s): %s", served.name, served.version, served.origin.source, why)

    # --- the repository extension -------------------------------------------------------------

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
        async with self._lock:
            groups = self._unloaded.setdefault(name, {name})
            for served in [m for m in self.registry.served() if name in (m.name, m.origin.group)]:
                groups.add(served.origin.group)
                self._unload(served, "unloaded through the repository API")
            for source, (group, _) in list(self.registry.refused.items()):
                if group == name:
                    del self.registry.refused[source]

    def index(self) -> list[dict[str, str]]:
        """Every model version in the directory, and whether it is served (the extension's index)."""
        served = {m.origin.source: m for m in self.registry.served()}
        rows = []
        for f in scan(self.settings.model_dir):
            m = served.get(f.origin.source)
            name = m.name if m is not None else f.origin.group
            if m is not None:
                rows.append({"name": name, "version": f.version, "state": "READY", "reason": ""})
            else:
                why = self.registry.refused.get(f.origin.source, (None, ""))[1]
                reason = why or ("unloaded" if f.origin.group in self.unloaded_groups else "not in the version policy")
                rows.append({"name": name, "version": f.version, "state": "UNAVAILABLE", "reason": reason})
        return rows


# An absolute path (two or more components): replaced by its last component in what clients see.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"():,;]+/)+([^\s/'\"():,;]+)")


def _without_paths(message: str, path: Path) -> str:
    """``message`` with the model file's path (and any other absolute path) reduced to a name."""
    for shown in {str(path.resolve()), str(path.absolute()), str(path)}:
        message = message.replace(shown, path.name)
    return _ABSOLUTE_PATH.sub(r"\1", message)
