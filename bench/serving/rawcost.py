"""What a request's parts cost without a server, on the core this process is pinned to.

    taskset -c 0 python -m bench.serving.rawcost MODEL.onnx IMAGE_FILE

Prints JSON: microseconds per image of onnxruntime ``session.run`` (one intra-op thread, as the
service runs it on one core) at batch 1, 8 and 32, and of ``service.pipeline.imaging.load_image`` on the file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from service.models.runtime import ModelRuntime
from service.pipeline.imaging import DecodeLimits, load_image


def per_call(fn, seconds: float = 1.0) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return elapsed / n


def main() -> None:
    model, image = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes()
    runtime = ModelRuntime(model, threads=1, providers=["CPUExecutionProvider"])
    spec = runtime.metadata.input
    out = {}
    for n in (1, 8, 32):
        x = np.random.default_rng(0).random((n, *runtime.input_shape), dtype=np.float32)
        out[f"ort_us_per_image_b{n}"] = per_call(lambda x=x: runtime.run(x)) / n * 1e6
    limits = DecodeLimits(50_000_000, 20_000, 100.0)
    out["load_image_us"] = per_call(lambda: load_image(image, spec, limits)) * 1e6
    print(json.dumps(out))


if __name__ == "__main__":
    main()
