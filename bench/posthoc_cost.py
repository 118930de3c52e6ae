"""What a post-hoc score costs per image when served: each score's file against the classifier's own file, and the
photo model's v3 files against v2, on one core (onnxruntime, one intra-op thread, batches of 64, median of 20).

    python bench/posthoc_cost.py models/cifar10-acet-oe-fastnet.onnx --data-root ../shared/data \\
        --compare models/cifar10-photo-v3.onnx models/cifar10-photo-v3-int8.onnx

Run it on a quiet machine: every figure is a ratio against the classifier measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
import posthoc_table

from training.posthoc import choice, parts, sources

BATCH, REPEATS = 64, 20


def per_image_ms(model_bytes: bytes, x: np.ndarray) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, {"images": x})
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        sess.run(None, {"images": x})
        times.append(time.perf_counter() - t)
    return statistics.median(times) / len(x) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("classifier", type=Path)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--compare", type=Path, nargs="*", default=[])
    args = p.parse_args()
    clf, data, names, arrays = posthoc_table.extract(args.classifier, [], args.data_root, 0)
    x = (data.test.x[:BATCH].float() / 255).numpy()
    base = per_image_ms(args.classifier.read_bytes(), x)
    rows = [f"| `{args.classifier.name}` (the classifier alone) | {base:.3f} | 1.00 |"]
    fitted = choice.Fitted(arrays["fit"], data.fit.y.numpy(), clf.head)
    w = sources.Wrapped(clf, sources.preprocess(posthoc_table.IDENTITY, (3, 32, 32)), (3, 32, 32))
    extractor = w.extractor()
    dims = {k: (v.shape[1] if v.ndim == 2 else 1) for k, v in arrays["fit"].items()}
    for cand in choice.candidates(set(names) - {sources.LOGITS}, clf.head is not None):
        head = parts.Head(fitted.components(cand, arrays["reference"]), sorted({cand.components[0][1]} - {"logits"}))
        ms = per_image_ms(sources.served(extractor, head, dims).SerializeToString(), x)
        rows.append(f"| score `{cand.label}` | {ms:.3f} | {ms / base:.2f} (score: {(ms - base) / base:+.1%}) |")
    for path in args.compare:
        ms = per_image_ms(path.read_bytes(), x)
        rows.append(f"| `{path.name}` | {ms:.3f} | {ms / base:.2f} |")
    print("| file | ms per image (one core) | vs the classifier |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
