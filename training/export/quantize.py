"""An exported float32 model file -> its int8 variant: static QDQ quantization of the network's body.

onnxruntime's ``quantize_static`` (QDQ format: QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses
into int8 kernels) quantizes the convolutions and matrix products and the cheap ops between them (ReLU,
pooling, reshapes, residual adds), weights per output channel, activations per tensor with ranges measured on
training images. Three parts stay float, found from the graph's structure rather than from node names a
torch version may change:

- the input-domain guard (``domain_guard/`` nodes): it compares raw pixels with [0, 1] and must stay exact;
- everything that does not lead to ``logits``: the softmax and the OOD score, whose small differences
  between in- and out-of-distribution images are what the threshold separates;
- the head, the last matrix product(s) before an output: a tenth of a percent of the network's arithmetic,
  and where a score such as IsoMax+'s prototype distance is formed.

The exporter then calibrates and evaluates the int8 file itself (``training.export.exporter``): quantization
moves the scores, so a threshold set on the float graph would not keep its promise on this one.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from modelfile import INPUT_NAME
from modelfile.signature import LOGITS

from ..data import datasets
from .domain_guard import PREFIX as GUARD_PREFIX

MATRIX_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
CALIBRATION_BATCH = 32
CALIBRATION_IMAGES = 512  # training images the activation ranges are measured on
PRECISIONS = ("fp32", "int8")


def float_nodes(graph, bodies: tuple[str, ...] = (LOGITS.name,)) -> list[str]:
    """Names of the nodes quantization leaves in float32: the domain guard, all that does not lead to
    ``logits`` or the other tensors in ``bodies`` (softmax, OOD score) and the head (each matrix product with no
    other one between it and an output)."""
    producer = {out: node for node in graph.node for out in node.output}

    def upstream(tensors, stop_at_matrix: bool) -> set[str]:
        seen, todo, found = set(), list(tensors), set()
        while todo:
            node = producer.get(todo.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if stop_at_matrix and node.op_type in MATRIX_OPS:
                found.add(node.name)
                continue
            todo.extend(node.input)
        return found if stop_at_matrix else seen

    body = upstream(list(bodies), stop_at_matrix=False)
    head = upstream([o.name for o in graph.output], stop_at_matrix=True)
    return sorted(n.name for n in graph.node if n.name.startswith(GUARD_PREFIX) or n.name not in body or n.name in head)


class _Batches:
    """onnxruntime's ``CalibrationDataReader`` protocol over an array of images."""

    def __init__(self, images: np.ndarray):
        self._batches: Iterator[np.ndarray] = iter(np.array_split(images, max(1, len(images) // CALIBRATION_BATCH)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def to_int8(path: Path, images: np.ndarray, bodies: tuple[str, ...] = (LOGITS.name,)) -> list[str]:
    """Quantize the float32 model file at ``path`` in place, activation ranges from ``images`` (float32
    ``[N, C, H, W]`` in [0, 1]); returns the names of the nodes left in float (``float_nodes``, with ``bodies``).
    Metadata is not carried over: the caller writes it, measured on the result."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    proto = onnx.load(str(path))
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer):
        raise ValueError(f"{path.name} stores float16 weights (--fp16-weights): quantize from the float32 export")
    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference and graph optimisation (batch norms folded into convolutions) first, as
        # onnxruntime's quantization guide asks: the quantizer needs every tensor's shape, and a folded
        # graph quantizes each convolution once instead of a convolution and its normalisation apart.
        # onnxruntime's symbolic shape inference is skipped: it fails on these graphs (the ReduceMax after the
        # softmax takes its axes as an input: "TypeError: object of type 'NoneType' has no len()"), and ONNX's
        # own shape inference, which still runs, knows every shape of a fixed-size image network.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
        keep_float = float_nodes(onnx.load(str(prepared)).graph, bodies)
        with _quiet_root_logger():
            quantize_static(
                str(prepared),
                str(path),
                _Batches(images.astype(np.float32)),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep_float,
                calibrate_method=CalibrationMethod.MinMax,
                # MinMax keeps only each batch's per-tensor minimum and maximum, so all batches fit in memory.
                # (CalibMaxIntermediateOutputs, meant to bound that memory, drops batches in onnxruntime 1.32.)
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                # 7-bit weights: x86 CPUs without AVX-512 VNNI multiply uint8 activations by int8 weights with
                # vpmaddubsw, whose int16 pair sums saturate on full-range weights. The photo model quantized
                # with 8-bit weights gave 61 % CIFAR-10 test error on an AVX2-only CPU (fp32: 10.3 %, label
                # agreement 0.40); with reduce_range 10.4 %, agreement 0.98, score correlation 0.99.
                reduce_range=True,
            )
    return keep_float


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer warns on the root logger for every 1-D weight it does not quantize per channel
    (normalisation weights not folded into a convolution): expected here, and noise in an export's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_export(precision: str, path: Path, train_images: torch.Tensor, seed: int, source: Path) -> dict:
    """Bring the freshly exported float32 file at ``path`` to ``precision``; returns the metadata fields that say
    so. Activation ranges come from ``CALIBRATION_IMAGES`` training images drawn with ``seed`` (never the
    validation split, which then calibrates the threshold on the quantized file)."""
    if precision == "fp32":
        return {}
    source = source.resolve()
    pick = np.random.default_rng([seed, 8]).permutation(len(train_images))[:CALIBRATION_IMAGES]
    to_int8(path, datasets.as_float(train_images[np.sort(pick)]).numpy())
    # The run folder names the run; the file alone (last.pt) would not. Never the absolute path.
    return {"precision": precision, "quantized_from": f"{source.parent.name}/{source.name}"}
