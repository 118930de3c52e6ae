"""Small but real oodserve model files, built with the ``onnx`` package, for tests that need a
model other than the bundled ones: an RGB model of another size, a model whose graph breaks the
contract, a corrupt file.

The graph is a linear classifier: Flatten -> Gemm -> (logits) -> Softmax -> (probabilities);
ood_score = 1 - max probability (or, with ``score_of_pixels``, (pixel 0 - pixel 1) / pixel 2, so that
a test picks each image's score, NaN and infinities included, by the pixels it sends). Weights come
from a seeded generator, so answers are stable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelfile import METADATA_KEY, Calibration, InputSpec, ModelMetadata


def metadata(
    name: str = "stand-in",
    *,
    classes: list[str] | None = None,
    channels: int = 1,
    height: int = 28,
    width: int = 28,
    resize: str = "stretch",
    threshold: float = 0.5,
) -> ModelMetadata:
    classes = classes or [str(i) for i in range(10)]
    return ModelMetadata(
        name=name,
        version="0.0.1-test",
        method="stand-in",
        score="1 - max softmax",
        classes=classes,
        input=InputSpec(
            channels=channels, height=height, width=width, color_mode="L" if channels == 1 else "RGB", resize=resize
        ),
        dataset="none (random weights)",
        calibration=Calibration(
            threshold=threshold, tpr=0.95, n=1000, scores=[float(s) for s in np.linspace(0.0, 0.9, 101)]
        ),
    )


def write_model(
    path: Path,
    meta: ModelMetadata | None = None,
    *,
    graph_classes: int | None = None,
    graph_channels: int | None = None,
    output_names: tuple[str, ...] = ("probabilities", "ood_score", "logits"),
    fixed_batch: bool = False,
    score_of_pixels: bool = False,
) -> Path:
    """Write a working model file; ``graph_classes``, ``graph_channels``, ``output_names`` and
    ``fixed_batch`` break the contract on purpose, for the runtime's checks."""
    meta = meta or metadata(path.stem)
    spec = meta.input
    k = graph_classes or len(meta.classes)
    channels = graph_channels or spec.channels
    features = channels * spec.height * spec.width
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array((rng.normal(size=(features, k)) * 0.05).astype(np.float32), "W")
    bias = numpy_helper.from_array(np.zeros(k, dtype=np.float32), "B")
    if score_of_pixels:
        constants = [numpy_helper.from_array(np.array(i, dtype=np.int64), f"pixel{i}") for i in range(3)]
    else:
        constants = [numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")]
    probs, score, logits = output_names if len(output_names) == 3 else (*output_names, "unused")[:3]
    nodes = [
        helper.make_node("Flatten", ["images"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], [logits]),
        helper.make_node("Softmax", [logits], [probs], axis=1),
        *(_pixel_score(score) if score_of_pixels else _one_minus_max(probs, score)),
    ]
    n = 1 if fixed_batch else "N"
    graph = helper.make_graph(
        nodes,
        "stand_in",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [n, channels, spec.height, spec.width])],
        [
            helper.make_tensor_value_info(probs, TensorProto.FLOAT, [n, k]),
            helper.make_tensor_value_info(score, TensorProto.FLOAT, [n]),
            helper.make_tensor_value_info(logits, TensorProto.FLOAT, [n, k]),
        ][: len(output_names)],
        initializer=[weights, bias, *constants],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the service supports
    helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _one_minus_max(probs: str, score: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("ReduceMax", [probs], ["max_p"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["one", "max_p"], [score]),
    ]


def _pixel_score(score: str) -> list[onnx.NodeProto]:
    return [
        *(helper.make_node("Gather", ["flat", f"pixel{i}"], [f"p{i}"], axis=1) for i in range(3)),
        helper.make_node("Sub", ["p0", "p1"], ["difference"]),
        helper.make_node("Div", ["difference", "p2"], [score]),
    ]


def write_corrupt_model(path: Path) -> Path:
    """Bytes that start like a protobuf but are not a model: what a truncated download looks like."""
    path.write_bytes(b"\x08\x08\x12\x04oops" + bytes(range(256)) * 4)
    return path
