"""What a post-hoc score costs per image when served: each score's file against the classifier's own file, and the
photo model's v3 files against v2, on one core (onnxruntime, one intra-op thread, batches of 64, median of 20).

    python bench/posthoc_cost.py models/cifar10-acet-oe-fastnet.onnx --data-root ../shared/data \\
        --compare models/cifar10-photo-v3.onnx models/cifar10-photo-v3-int8.onnx

``--files-only`` times the classifier and the ``--compare`` files alone, each at its own input size (a network
fine-tuned at 64 px gets the same images upsampled). Run it on a quiet machine: every figure is a ratio against the
classifier measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).parent))
import posthoc_table

from training.data import datasets
from training.posthoc import choice, parts, sources

BATCH, REPEATS = 64, 20


def session(model_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def per_image_ms(sessions: dict[str, ort.InferenceSession], x: np.ndarray) -> dict[str, float]:
    """Each session's median batch time, the sessions taking turns batch by batch, so that a change of the CPU's
    clock or a neighbour's load falls on all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in sessions}
    inputs = {k: at_input_size(x, sess) for k, sess in sessions.items()}
    for k, sess in sessions.items():
        sess.run(None, {"images": inputs[k]})
    for _ in range(REPEATS):
        for k, sess in sessions.items():
            t = time.perf_counter()
            sess.run(None, {"images": inputs[k]})
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) / len(x) * 1e3 for k, v in times.items()}


def at_input_size(x: np.ndarray, sess: ort.InferenceSession) -> np.ndarray:
    """The same images at the file's own input size (a fine-tuned network's 64 px: upsampled as its run saw them)."""
    _, _, h, w = sess.get_inputs()[0].shape
    if (h, w) == x.shape[2:]:
        return x
    return datasets.to_shape(torch.from_numpy(x), x.shape[1], h, w).numpy()


def every_score(args: argparse.Namespace, sessions: dict) -> np.ndarray:
    """Each post-hoc score's file on the classifier's features, into ``sessions``; returns the timed images."""
    clf, data, names, arrays = posthoc_table.extract(args.classifier, [], args.data_root, 0)
    fitted = choice.Fitted(arrays["fit"], data.fit.y.numpy(), clf.head)
    w = sources.Wrapped(clf, sources.preprocess(posthoc_table.IDENTITY, (3, 32, 32)), (3, 32, 32))
    extractor = w.extractor()
    dims = {k: (v.shape[1] if v.ndim == 2 else 1) for k, v in arrays["fit"].items()}
    for cand in choice.candidates(set(names) - {sources.LOGITS}, clf.head is not None):
        head = parts.Head(fitted.components(cand, arrays["reference"]))
        sessions[f"score `{cand.label}`"] = session(sources.served(extractor, head, dims).SerializeToString())
    return (data.test.x[:BATCH].float() / 255).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("classifier", type=Path)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--compare", type=Path, nargs="*", default=[])
    p.add_argument(
        "--files-only", action="store_true", help="time the classifier and the --compare files, not every score"
    )
    args = p.parse_args()
    sessions = {"classifier": session(args.classifier.read_bytes())}
    if args.files_only:
        test = datasets.load("cifar10", args.data_root, download=False).test
        x = (test.x[:BATCH].float() / 255).numpy()
    else:
        x = every_score(args, sessions)
    sessions |= {f"`{p.name}`": session(p.read_bytes()) for p in args.compare}
    ms = per_image_ms(sessions, x)
    base = ms.pop("classifier")
    rows = [f"| `{args.classifier.name}` (the classifier alone) | {base:.3f} | 1.00 |"]
    rows += [f"| {k} | {v:.3f} | {v / base:.2f} |" for k, v in ms.items()]
    print("| file | ms per image (one core) | vs the classifier |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
