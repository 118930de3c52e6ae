"""The graph's signature: the one input and the outputs of every oodserve file, with dtypes and shapes.

A shape names its dimensions: ``batch`` is dynamic, ``channels``, ``height`` and ``width`` come from the
metadata's ``input``, ``classes`` is the number of classes it lists. The exporter writes these names, the
service runs them and checks what comes back, the Open Inference Protocol advertises them: all from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .schema import InvalidModelFile


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy's name for it
    dims: tuple[str, ...]

    def shape(self, sizes: Mapping[str, int | None]) -> tuple[int | None, ...]:
        """The concrete shape for ``sizes`` (a dimension missing from it is ``None``: any size)."""
        return tuple(sizes.get(d) for d in self.dims)


IMAGES = Tensor("images", "float32", ("batch", "channels", "height", "width"))
PROBABILITIES = Tensor("probabilities", "float32", ("batch", "classes"))
OOD_SCORE = Tensor("ood_score", "float32", ("batch",))
LOGITS = Tensor("logits", "float32", ("batch", "classes"))
OUTPUTS = (PROBABILITIES, OOD_SCORE, LOGITS)
# What the service reads from a run; the logits are in every file for evaluation and attacks.
SERVED = (PROBABILITIES, OOD_SCORE)
# Not in the graph: the verdict the service adds to each row (``Calibration.is_ood`` of its ``ood_score``).
IS_OOD = Tensor("is_ood", "bool", ("batch",))

INPUT_NAME = IMAGES.name
OUTPUT_NAMES = tuple(t.name for t in OUTPUTS)
# onnxruntime's spelling of the element types above.
_ORT_TYPES = {"float32": "tensor(float)", "bool": "tensor(bool)"}


def check_graph(
    inputs: Sequence[tuple[str, str, Sequence]],
    outputs: Mapping[str, Sequence],
    sizes: Mapping[str, int],
) -> None:
    """Refuse a graph whose input or outputs are not the contract's.

    ``inputs`` are (name, onnxruntime type, shape) and ``outputs`` name -> shape, as a session reports them
    (a dimension may be a string or ``None`` where it is symbolic); ``sizes`` are the metadata's.
    """
    names = [name for name, _, _ in inputs]
    if names != [INPUT_NAME]:
        raise InvalidModelFile(f"graph inputs must be exactly ['{INPUT_NAME}'], found {names}")
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        raise InvalidModelFile(f"graph outputs missing {missing}; found {list(outputs)}")
    _, ort_type, shape = inputs[0]
    if ort_type != _ORT_TYPES[IMAGES.dtype]:
        raise InvalidModelFile(f"input '{INPUT_NAME}' is {ort_type}, expected {_ORT_TYPES[IMAGES.dtype]}")
    _check_shape(IMAGES, shape, sizes, "input")
    _check_shape(PROBABILITIES, outputs[PROBABILITIES.name], sizes, "output")


def check_run(arrays: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> None:
    """Refuse a run whose outputs do not have the contract's concrete shapes (``sizes`` holds ``batch``)."""
    for tensor in SERVED:
        want = tensor.shape(sizes)
        got = arrays[tensor.name].shape
        if got != want:
            raise InvalidModelFile(
                f"'{tensor.name}' has shape {got} for a batch of {sizes['batch']}; expected {want} "
                f"({', '.join(tensor.dims)})"
            )


def _check_shape(tensor: Tensor, shape: Sequence, sizes: Mapping[str, int], kind: str) -> None:
    want = tensor.shape(sizes)
    if len(shape) != len(want) or any(
        isinstance(g, int) and w is not None and g != w for g, w in zip(shape, want, strict=False)
    ):
        spelled = ", ".join("N" if d == "batch" else str(sizes.get(d, d)) for d in tensor.dims)
        why = f": it lists {sizes['classes']} classes" if "classes" in tensor.dims else ""
        raise InvalidModelFile(f"{kind} '{tensor.name}' has shape {list(shape)}; the metadata says [{spelled}]{why}")
