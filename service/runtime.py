"""One onnxruntime session for one model file: providers, threads, signature checks, warm-up."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelfile import (
    INPUT_NAME,
    InvalidModelFile,
    ModelMetadata,
    check_graph_signature,
    metadata_from_props,
    open_session,
)

log = logging.getLogger(__name__)

# The outputs the service uses; `logits` is part of the contract but nothing here needs it.
SERVED_OUTPUTS = ("probabilities", "ood_score")


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
        probabilities, ood_score = self.session.run(list(SERVED_OUTPUTS), {INPUT_NAME: images})
        return {"probabilities": probabilities, "ood_score": ood_score}

    def warm_up(self, max_batch_size: int) -> None:
        """Run the smallest and largest batch once: allocates arenas, and proves the batch dimension
        is really dynamic and the outputs have the shapes the metadata promises."""
        k = len(self.metadata.classes)
        for n in sorted({1, max_batch_size}):
            try:
                out = self.run(np.zeros((n, *self.input_shape), dtype=np.float32))
            except Exception as e:  # onnxruntime's own error types
                raise InvalidModelFile(f"{self.path.name}: a batch of {n} images fails to run: {e}") from None
            if out["probabilities"].shape != (n, k):
                raise InvalidModelFile(
                    f"{self.path.name}: 'probabilities' has shape {out['probabilities'].shape} for a batch "
                    f"of {n}; expected ({n}, {k}) for the {k} classes in the metadata"
                )
            if out["ood_score"].shape != (n,):
                raise InvalidModelFile(
                    f"{self.path.name}: 'ood_score' has shape {out['ood_score'].shape} for a batch of {n}; "
                    f"expected ({n},)"
                )


def _check_signature(session: ort.InferenceSession, metadata: ModelMetadata, path: Path) -> None:
    inputs = session.get_inputs()
    outputs = {o.name: o for o in session.get_outputs()}
    try:
        check_graph_signature([i.name for i in inputs], list(outputs))
    except InvalidModelFile as e:
        raise InvalidModelFile(f"{path.name}: {e}") from None
    image = inputs[0]
    if image.type != "tensor(float)":
        raise InvalidModelFile(f"{path.name}: input '{INPUT_NAME}' is {image.type}, expected tensor(float)")
    spec = metadata.input
    expected = [None, spec.channels, spec.height, spec.width]
    if len(image.shape) != 4 or any(
        isinstance(got, int) and want is not None and got != want
        for got, want in zip(image.shape, expected, strict=True)
    ):
        raise InvalidModelFile(
            f"{path.name}: input '{INPUT_NAME}' has shape {image.shape}; the metadata says "
            f"[N, {spec.channels}, {spec.height}, {spec.width}]"
        )
    k = len(metadata.classes)
    probs = outputs["probabilities"].shape
    if len(probs) != 2 or (isinstance(probs[1], int) and probs[1] != k):
        raise InvalidModelFile(f"{path.name}: output 'probabilities' has shape {probs}; the metadata lists {k} classes")


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
