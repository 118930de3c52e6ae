"""BentoML adaptive batching on the same ONNX model, for bench/serve_bench.py (run in its own venv).

    BENCH_MODEL=model.onnx bentoml serve bench.serving.bento_service:Classifier --port P

``POST /predict`` takes the multipart field ``file``; BentoML batches requests up to 32 images.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
import onnxruntime as ort
from PIL import Image


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.environ["BENCH_MODEL"], opts, providers=["CPUExecutionProvider"])
        _, channels, height, width = self.session.get_inputs()[0].shape
        self.mode, self.size = ("L" if channels == 1 else "RGB"), (width, height)

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def predict(self, file: list[Image.Image]) -> list[dict]:
        arrays = [np.asarray(im.convert(self.mode).resize(self.size), dtype=np.float32) / 255.0 for im in file]
        x = np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])
        probabilities, scores = self.session.run(["probabilities", "ood_score"], {"images": x})
        best = probabilities.argmax(axis=1)
        return [
            {"label": int(b), "confidence": float(p[b]), "ood_score": float(s)}
            for b, p, s in zip(best, probabilities, scores, strict=True)
        ]
