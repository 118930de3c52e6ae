"""Graph surgery: find a classifier's logits and features in its ONNX file, and join graphs into one.

The features a post-hoc score reads are the input of the classifier's last linear layer (a ``Gemm``, or a
``MatMul`` followed by an ``Add``, whose output leads to the logits with at most a ``Reshape``/``Flatten``/
``Identity`` between): what OpenOOD calls the penultimate layer. Where the graph has no such layer, or several
candidates, ``--features NAME`` names the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import compose, numpy_helper, version_converter

from modelfile import OUTPUT_NAMES

FLOAT = onnx.TensorProto.FLOAT
PASS_THROUGH = ("Reshape", "Flatten", "Identity", "Squeeze")


class NotAClassifier(ValueError):
    """The file's graph is not one this command can wrap; the message says what to name."""


@dataclass
class Classifier:
    """Where a classifier graph keeps what the scores read."""

    model: onnx.ModelProto
    input: str
    input_shape: list  # ints or dimension names
    logits: str
    features: str | None
    head: tuple[np.ndarray, np.ndarray] | None  # W [K, D], b [K] of the last linear layer
    own_score: str | None  # an oodserve file's own ood_score output


def classifier(model: onnx.ModelProto, *, logits: str | None = None, features: str | None = None) -> Classifier:
    """The input, the logits (the output named ``logits``, else the only output with a 2-D shape) and the features
    (the last linear layer's input, or ``features``) of ``model``."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        raise NotAClassifier(f"the graph has {len(inputs)} inputs; a classifier takes one image batch")
    outputs = [o.name for o in g.output]
    logits = logits or _logits_output(g, outputs)
    head = _last_linear(g, logits)
    if features is None:
        if head is None:
            raise NotAClassifier(
                f"no final linear layer (Gemm, or MatMul + Add) found before {logits!r}: name the feature "
                "tensor with --features NAME"
            )
        features = head[0]
    elif features not in _tensor_names(g):
        raise NotAClassifier(f"--features {features!r} is not a tensor of the graph")
    weights = _head_weights(g, head) if head is not None and head[0] == features else None
    return Classifier(
        model=model,
        input=inputs[0].name,
        input_shape=[d.dim_value or d.dim_param for d in inputs[0].type.tensor_type.shape.dim],
        logits=logits,
        features=features,
        head=weights,
        own_score=OUTPUT_NAMES[1] if OUTPUT_NAMES[1] in outputs else None,
    )


def _logits_output(g: onnx.GraphProto, outputs: list[str]) -> str:
    if OUTPUT_NAMES[2] in outputs:
        return OUTPUT_NAMES[2]
    two_d = [o.name for o in g.output if len(o.type.tensor_type.shape.dim) == 2]
    if len(two_d) != 1:
        raise NotAClassifier(
            f"cannot tell the logits among the outputs {outputs}: name them with --logits NAME "
            "(the pre-softmax scores, [N, classes])"
        )
    return two_d[0]


def _tensor_names(g: onnx.GraphProto) -> set[str]:
    return {t for n in g.node for t in (*n.input, *n.output)} | {i.name for i in g.input}


def _last_linear(g: onnx.GraphProto, logits: str) -> tuple[str, onnx.NodeProto, onnx.NodeProto | None] | None:
    """(features tensor, the matrix product node, its bias Add or None) of the layer that yields ``logits``."""
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    inits |= {n.output[0] for n in g.node if n.op_type == "Cast" and n.input[0] in inits}  # fp16-stored weights
    node = producer.get(logits)
    while node is not None and node.op_type in PASS_THROUGH:
        node = producer.get(node.input[0])
    if node is None:
        return None
    if node.op_type == "Gemm" and node.input[1] in inits:
        return node.input[0], node, None
    if node.op_type == "Add":
        for i, j in ((0, 1), (1, 0)):
            mm = producer.get(node.input[i])
            if mm is not None and mm.op_type == "MatMul" and mm.input[1] in inits and node.input[j] in inits:
                return mm.input[0], mm, node
    return None


def _constant(g: onnx.GraphProto, name: str) -> np.ndarray:
    for i in g.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
        if n.op_type == "Cast" and n.output[0] == name:
            return _constant(g, n.input[0]).astype(np.float32)
    raise KeyError(name)


def _head_weights(g: onnx.GraphProto, head) -> tuple[np.ndarray, np.ndarray]:
    _, mm, add = head
    w = _constant(g, mm.input[1]).astype(np.float64)
    if mm.op_type == "Gemm":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in mm.attribute}
        w = w if attrs.get("transB", 0) else w.T  # -> [K, D]
        w = w * attrs.get("alpha", 1.0)
        b = _constant(g, mm.input[2]).astype(np.float64) * attrs.get("beta", 1.0) if len(mm.input) > 2 else None
    else:
        w = w.T
        b = _constant(g, add.input[1] if add.input[0] == mm.output[0] else add.input[0]).astype(np.float64)
    return w, np.broadcast_to(b if b is not None else 0.0, (w.shape[0],)).copy()


def opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def at_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``model`` converted to the default domain's ``version`` (a file from an older exporter joins newer graphs)."""
    return model if opset(model) == version else version_converter.convert_version(model, version)


def join(
    parts: list[tuple[onnx.ModelProto, str, dict[str, str]]],
    outputs: dict[str, str],
    shapes: dict[str, list] | None = None,
) -> onnx.ModelProto:
    """One graph from ``parts`` in order, each (model, prefix, {its input: the tensor that feeds it}), every name of
    a part prefixed so two graphs never clash; ``outputs`` maps the joined graph's outputs to (prefixed) tensors.
    The first part's input is the joined graph's one input and keeps its name. ``shapes``: an output's shape where
    shape inference cannot tell it (dimension names or sizes), else rank unknown."""
    version = max(opset(m) for m, _, _ in parts)
    nodes, inits, opsets, ir = [], [], {}, 3
    image_input = onnx.ValueInfoProto()
    image_input.CopyFrom(parts[0][0].graph.input[0])
    for model, prefix, wiring in parts:
        m = compose.add_prefix(at_opset(model, version), prefix)
        rename = {prefix + k: v for k, v in wiring.items()}
        nodes += _renamed(m.graph.node, rename)
        inits += m.graph.initializer
        for o in m.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
        ir = max(ir, m.ir_version)
    nodes = _renamed(nodes, {t: name for name, t in outputs.items()})
    graph = onnx.helper.make_graph(nodes, "posthoc", [image_input], [], inits)
    joined = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()], ir_version=ir
    )
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(joined).graph.value_info}
    for name in outputs:
        shape = (shapes or {}).get(name)
        info = inferred.get(name) if shape is None else onnx.helper.make_tensor_value_info(name, FLOAT, shape)
        joined.graph.output.append(info or onnx.helper.make_tensor_value_info(name, FLOAT, None))
    return joined


def _renamed(nodes, rename: dict[str, str]) -> list[onnx.NodeProto]:
    for node in nodes:
        node.input[:] = [rename.get(t, t) for t in node.input]
        node.output[:] = [rename.get(t, t) for t in node.output]
    return list(nodes)


def float32_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with weights stored as float16 behind a ``Cast`` (``training.export --fp16-weights``) stored as
    float32 again: the quantizer quantizes initialisers, not the outputs of Casts."""
    inits = {i.name: i for i in model.graph.initializer}
    casts = [
        n
        for n in model.graph.node
        if n.op_type == "Cast" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.FLOAT16
    ]
    if not casts:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    halves = {n.input[0] for n in casts}
    kept = [i for i in out.graph.initializer if i.name not in halves]
    kept += [
        numpy_helper.from_array(numpy_helper.to_array(inits[n.input[0]]).astype(np.float32), n.output[0]) for n in casts
    ]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    nodes = [n for n in out.graph.node if not (n.op_type == "Cast" and n.input[0] in halves)]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out
