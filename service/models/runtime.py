"""One onnxruntime session for one model file: providers, threads, signature checks, warm-up."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelfile import InvalidModelFile, ModelMetadata, metadata_from_props, open_session, signature

log = logging.getLogger(__name__)

SERVED_NAMES = [t.name for t in signature.SERVED]  # built once: run() is on every batch's path


class ModelRuntime:
    """A loaded, checked and warmed-up model. ``run`` is safe to call from any one thread."""

    def __init__(self, path: Path, *, threads: int, providers: list[str]):
        self.path = path
        self.session = open_session(path, threads=threads, providers=providers)
        try:
            self.metadata: ModelMetadata = metadata_from_props(self.session.get_modelmeta().custom_metadata_map)
        except InvalidModelFile as e:
            raise InvalidModelFile(f"{path.name}: {e}") from None
        _check_signature(self.session, self.metadata, path)
        self.providers: list[str] = self.session.get_providers()
        _warn_on_fallback(self.metadata.name, providers, self.providers)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        spec = self.metadata.input
        return (spec.channels, spec.height, spec.width)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(SERVED_NAMES, {signature.INPUT_NAME: images})
        return dict(zip(SERVED_NAMES, outputs, strict=True))

    def warm_up(self, max_batch_size: int) -> None:
        """Run the smallest and largest batch once: allocates arenas, and proves the batch dimension
        is really dynamic and the outputs have the shapes the metadata promises."""
        for n in sorted({1, max_batch_size}):
            try:
                out = self.run(np.zeros((n, *self.input_shape), dtype=signature.IMAGES.dtype))
            except Exception as e:  # onnxruntime's own error types
                raise InvalidModelFile(f"{self.path.name}: a batch of {n} images fails to run: {e}") from None
            try:
                signature.check_run(out, {**_sizes(self.metadata), "batch": n})
            except InvalidModelFile as e:
                raise InvalidModelFile(f"{self.path.name}: {e}") from None


def _sizes(metadata: ModelMetadata) -> dict[str, int]:
    spec = metadata.input
    return {"channels": spec.channels, "height": spec.height, "width": spec.width, "classes": len(metadata.classes)}


def _check_signature(session: ort.InferenceSession, metadata: ModelMetadata, path: Path) -> None:
    inputs = [(i.name, i.type, i.shape) for i in session.get_inputs()]
    outputs = {o.name: o.shape for o in session.get_outputs()}
    try:
        signature.check_graph(inputs, outputs, _sizes(metadata))
    except InvalidModelFile as e:
        raise InvalidModelFile(f"{path.name}: {e}") from None


def _warn_on_fallback(model: str, requested: list[str], actual: list[str]) -> None:
    missing = [p for p in requested if p not in actual]
    if missing:
        log.warning(
            "!!! model '%s': execution provider(s) %s requested but not in use; onnxruntime runs it on %s. "
            "Is onnxruntime-gpu installed (instead of onnxruntime) and a GPU visible to this process?",
            model,
            missing,
            actual,
        )
