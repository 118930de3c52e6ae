"""An ONNX graph run by torch, node by node, so that gradients flow through it: an attack can then move an image
against the very graph a file serves (its guard, its classifier, a pretrained branch), not against a torch model
that is supposed to equal it. Covers the operators oodserve's exporters and common CNN exports use; an unknown one
is refused by name. Float arithmetic follows onnxruntime's to about 1e-5 (the test compares them); int8 files
(QuantizeLinear/DequantizeLinear) run in float with onnxruntime's rounding.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _reduce(fn):
    def run(x, axes=None, *, keepdims=1, noop_with_empty_axes=0, **_):
        axes = _ints(axes) or list(range(x.dim()))
        return fn(x, axes, bool(keepdims))

    return run


def _conv(x, w, b=None, *, pads=None, strides=None, dilations=None, group=1, **_):
    x = _pad(x, pads)
    return F.conv2d(x, w, b, stride=strides or 1, dilation=dilations or 1, groups=group)


def _pad(x, pads):
    if not pads or not any(pads):
        return x
    half = len(pads) // 2  # ONNX: all begins, then all ends; F.pad: last dimension first, (begin, end) pairs
    return F.pad(x, [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])])


def _maxpool(x, *, kernel_shape, strides=None, pads=None, ceil_mode=0, dilations=None, **_):
    x = _pad(x, pads) if pads and any(pads) else x
    return F.max_pool2d(x, kernel_shape, strides or kernel_shape, 0, dilations or 1, bool(ceil_mode))


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, **_):
    y = alpha * ((a.T if transA else a) @ (b.T if transB else b))
    return y if c is None else y + beta * c


def _resize(x, roi=None, scales=None, sizes=None, *, mode=b"nearest", coordinate_transformation_mode=b"", **_):
    if mode != b"linear" or coordinate_transformation_mode not in (b"half_pixel", b"pytorch_half_pixel"):
        raise NotImplementedError(f"Resize mode {mode!r} with {coordinate_transformation_mode!r}")
    size = _ints(sizes)[2:] if sizes is not None and sizes.numel() else None
    factors = None if size else [float(s) for s in scales.tolist()[2:]]
    return F.interpolate(x, size=size, scale_factor=factors, mode="bilinear", align_corners=False)


def _topk(x, k, *, axis=-1, largest=1, sorted=1, **_):
    out = torch.topk(x, int(k.reshape(-1)[0]), dim=axis, largest=bool(largest), sorted=bool(sorted))
    return out.values, out.indices


def _slice(x, starts, ends, axes=None, steps=None, **_):
    axes, steps = _ints(axes) or list(range(len(starts))), _ints(steps) or [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, a, st in zip(_ints(starts), _ints(ends), axes, steps, strict=True):
        index[a] = slice(s, None if e >= 2**62 else e, st)
    return x[tuple(index)]


def _per_axis(v: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    return v if v.dim() == 0 else v.reshape([-1 if i == axis % x.dim() else 1 for i in range(x.dim())])


def _quantize(x, scale, zero=None, *, axis=1, **_):
    """Rounded as onnxruntime rounds, with the gradient passed straight through the rounding (BPDA): an attack
    on an int8 file then steers by the float network the int8 one approximates."""
    zero = torch.zeros((), dtype=torch.uint8) if zero is None else zero
    lo, hi = (0, 255) if zero.dtype == torch.uint8 else (-128, 127)
    q = x / _per_axis(scale, x, axis) + _per_axis(zero.float(), x, axis)
    return (q + (torch.round(q) - q).detach()).clamp(lo, hi)


def _dequantize(q, scale, zero=None, *, axis=1, **_):
    zero = torch.zeros(()) if zero is None else zero.float()
    return (q.float() - _per_axis(zero, q, axis)) * _per_axis(scale, q, axis)


OPS = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Add": lambda a, b, **_: a + b,
    "Sub": lambda a, b, **_: a - b,
    "Mul": lambda a, b, **_: a * b,
    "Div": lambda a, b, **_: a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc"),
    "Pow": lambda a, b, **_: a**b,
    "Neg": lambda x, **_: -x,
    "Abs": lambda x, **_: x.abs(),
    "Sqrt": lambda x, **_: x.sqrt(),
    "Exp": lambda x, **_: x.exp(),
    "Log": lambda x, **_: x.log(),
    "Tanh": lambda x, **_: x.tanh(),
    "Erf": lambda x, **_: torch.erf(x),
    "Sigmoid": lambda x, **_: x.sigmoid(),
    "Relu": lambda x, **_: F.relu(x),
    "HardSigmoid": lambda x, *, alpha=0.2, beta=0.5, **_: (alpha * x + beta).clamp(0, 1),
    "HardSwish": lambda x, **_: F.hardswish(x),
    "Gelu": lambda x, *, approximate=b"none", **_: F.gelu(x, approximate=approximate.decode()),
    "Clip": lambda x, lo=None, hi=None, **_: x.clamp(lo, hi),
    "Identity": lambda x, **_: x,
    "Cast": lambda x, *, to, **_: x.to(DTYPES[to]),
    "Less": lambda a, b, **_: a < b,
    "Greater": lambda a, b, **_: a > b,
    "GreaterOrEqual": lambda a, b, **_: a >= b,
    "Equal": lambda a, b, **_: a == b,
    "Or": lambda a, b, **_: a | b,
    "And": lambda a, b, **_: a & b,
    "Not": lambda x, **_: ~x,
    "Where": lambda c, a, b, **_: torch.where(c, a, b),
    "Max": lambda *xs, **_: torch.stack(torch.broadcast_tensors(*xs)).amax(0),
    "Min": lambda *xs, **_: torch.stack(torch.broadcast_tensors(*xs)).amin(0),
    "MatMul": lambda a, b, **_: a @ b,
    "Gemm": _gemm,
    "Conv": _conv,
    "MaxPool": _maxpool,
    "GlobalAveragePool": lambda x, **_: x.mean((2, 3), keepdim=True),
    "BatchNormalization": lambda x, s, b, m, v, *, epsilon=1e-5, **_: F.batch_norm(x, m, v, s, b, False, 0.0, epsilon),
    "Softmax": lambda x, *, axis=-1, **_: torch.softmax(x, axis),
    "LogSoftmax": lambda x, *, axis=-1, **_: torch.log_softmax(x, axis),
    "ReduceMax": _reduce(lambda x, a, k: x.amax(a, keepdim=k)),
    "ReduceMin": _reduce(lambda x, a, k: x.amin(a, keepdim=k)),
    "ReduceSum": _reduce(lambda x, a, k: x.sum(a, keepdim=k)),
    "ReduceMean": _reduce(lambda x, a, k: x.mean(a, keepdim=k)),
    "ReduceL2": _reduce(lambda x, a, k: x.square().sum(a, keepdim=k).sqrt()),
    "ReduceLogSumExp": _reduce(lambda x, a, k: torch.logsumexp(x, a, keepdim=k)),
    "Shape": lambda x, *, start=0, end=None, **_: torch.tensor(x.shape[start:end], dtype=torch.int64),
    "Reshape": lambda x, s, **_: x.reshape([x.shape[i] if v == 0 else v for i, v in enumerate(_ints(s))]),
    "Flatten": lambda x, *, axis=1, **_: x.reshape(math.prod(x.shape[:axis]), -1),
    "Unsqueeze": lambda x, axes, **_: x.reshape(_unsqueezed(x.shape, _ints(axes))),
    "Squeeze": lambda x, axes=None, **_: x.squeeze(tuple(_ints(axes))) if axes is not None else x.squeeze(),
    "Transpose": lambda x, *, perm=None, **_: x.permute(perm or list(reversed(range(x.dim())))),
    "Concat": lambda *xs, axis, **_: torch.cat(xs, axis),
    "Gather": lambda x, i, *, axis=0, **_: torch.index_select(x, axis, i.reshape(-1) % x.shape[axis]).reshape(
        *x.shape[:axis], *i.shape, *x.shape[axis + 1 :]
    ),
    "Expand": lambda x, s, **_: torch.broadcast_to(x, torch.broadcast_shapes(x.shape, tuple(_ints(s)))),
    "Resize": _resize,
    "TopK": _topk,
    "Slice": _slice,
}


def _unsqueezed(shape, axes: list[int]) -> list[int]:
    out = list(shape)
    for a in sorted(a % (len(shape) + len(axes)) for a in axes):
        out.insert(a, 1)
    return out


class OnnxModule(nn.Module):
    """``forward(**inputs)`` -> the graph's outputs, in order, computed by torch."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        self.graph = model.graph
        if missing := sorted({n.op_type for n in self.graph.node if n.op_type not in OPS and n.op_type != "Constant"}):
            raise NotImplementedError(f"operators this interpreter does not run: {', '.join(missing)}")
        self.constants = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in self.graph.initializer}
        for n in self.graph.node:
            if n.op_type == "Constant":
                self.constants[n.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(n.attribute[0].t)))

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = dict(self.constants) | inputs
        for n in self.graph.node:
            if n.op_type == "Constant":
                continue
            args = [values[i] if i else None for i in n.input]
            while args and args[-1] is None:
                args.pop()
            out = OPS[n.op_type](*args, **_attrs(n))
            for name, v in zip(n.output, out if isinstance(out, tuple) else (out,), strict=False):
                values[name] = v
        return tuple(values[o.name] for o in self.graph.output)
