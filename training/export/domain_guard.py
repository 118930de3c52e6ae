"""The model file's input-domain guard: an input that is not an image gets the largest ``ood_score``.

A ReLU network's confidence grows without bound along almost every ray away from the data (Hein et al.,
CVPR 2019, Theorem 3.1): ``alpha * x`` for large ``alpha`` is classified with probability 1, and no
training on noise inside [0, 1] changes that (the CIFAR-10 models of docs/results/cifar10-benchmark.md
accept 100 % of ``100 * U[0,1]`` images). Such an input is outside the domain the model was made for,
which is cheap to see: the graph compares each image's smallest and largest pixel with [0, 1] (one
8-bit level of slack, ``DOMAIN_TOLERANCE``) and, if either lies outside, replaces the network's score
with ``OUT_OF_DOMAIN_SCORE`` (float32's largest value, above any threshold). In practice this catches
the integration mistakes that produce such tensors: 0-255 pixels, or mean/std-normalised ones fed to a
file that normalises inside its graph.

The service never sends such an input (decoding yields [0, 1]; the v2 endpoint refuses other values), so
the guard protects users who run the file directly. ``training.export`` adds it to every file;
(``training.evaluation.scorers.guarded`` is the same rule in torch, for checkpoints), and

    python -m training.export.domain_guard models/old-model.onnx

adds it to a file exported before (idempotent; metadata, weights and in-domain outputs are unchanged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from modelfile import DOMAIN_TOLERANCE, INPUT_NAME, OUT_OF_DOMAIN_SCORE
from modelfile.signature import OOD_SCORE

PREFIX = "domain_guard/"
SCORE = OOD_SCORE.name  # the output the guard takes over


def is_guarded(proto) -> bool:
    return any(n.name.startswith(PREFIX) for n in proto.graph.node)


def add(proto) -> bool:
    """Guard ``proto``'s ``ood_score`` in place; False if it already was."""
    from onnx import helper, numpy_helper

    if is_guarded(proto):
        return False
    graph, network_score = proto.graph, PREFIX + "network_score"
    for node in graph.node:  # the network's score keeps flowing where it did, under a new name
        node.output[:] = [network_score if o == SCORE else o for o in node.output]
        node.input[:] = [network_score if i == SCORE else i for i in node.input]

    def const(name: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), PREFIX + name))
        return PREFIX + name

    axes = const("axes", np.array([1, 2, 3], np.int64))
    low = const("low", np.float32(-DOMAIN_TOLERANCE))
    high = const("high", np.float32(1.0 + DOMAIN_TOLERANCE))
    out_score = const("out_of_domain_score", np.float32(OUT_OF_DOMAIN_SCORE))
    p = PREFIX
    graph.node.extend(
        [
            helper.make_node("ReduceMin", [INPUT_NAME, axes], [p + "min"], name=p + "min", keepdims=0),
            helper.make_node("ReduceMax", [INPUT_NAME, axes], [p + "max"], name=p + "max", keepdims=0),
            helper.make_node("Less", [p + "min", low], [p + "below"], name=p + "below"),
            helper.make_node("Greater", [p + "max", high], [p + "above"], name=p + "above"),
            helper.make_node("Or", [p + "below", p + "above"], [p + "outside"], name=p + "outside"),
            helper.make_node("Where", [p + "outside", out_score, network_score], [SCORE], name=p + "score"),
        ]
    )
    return True


def add_to_file(path: Path) -> bool:
    import onnx

    proto = onnx.load(str(path))
    if not add(proto):
        return False
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Add the input-domain guard to model files exported without it.")
    p.add_argument("files", type=Path, nargs="+", metavar="MODEL.onnx")
    for path in p.parse_args(argv).files:
        if not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            raise SystemExit(2)
        print(f"{path}: {'guard added' if add_to_file(path) else 'already guarded'}")


if __name__ == "__main__":
    main()
