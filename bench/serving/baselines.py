"""The bench's reference servers, run as ``uvicorn bench.serving.baselines:naive`` (or ``:floor``).

- ``naive``: FastAPI + onnxruntime the way a first version is written: decode the upload with Pillow
  and call ``session.run`` on it, one request at a time, on the event loop (model: ``$BENCH_MODEL``).
- ``floor``: the HTTP floor: the same FastAPI app reading the same multipart upload, answering a
  constant. No server that parses the upload this way can be faster per request.
"""

from __future__ import annotations

import io
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, UploadFile
from PIL import Image

naive = FastAPI()
floor = FastAPI()


def _session() -> tuple[ort.InferenceSession | None, str, tuple[int, int]]:
    path = os.environ.get("BENCH_MODEL")
    if not path:
        return None, "L", (28, 28)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    _, channels, height, width = session.get_inputs()[0].shape
    return session, "L" if channels == 1 else "RGB", (width, height)


SESSION, MODE, SIZE = _session()


@naive.post("/predict")
async def naive_predict(file: UploadFile) -> dict:
    im = Image.open(io.BytesIO(await file.read())).convert(MODE).resize(SIZE)
    x = np.asarray(im, dtype=np.float32) / 255.0
    x = x[None, None] if x.ndim == 2 else x.transpose(2, 0, 1)[None]
    probabilities, score = SESSION.run(["probabilities", "ood_score"], {"images": x})
    best = int(probabilities[0].argmax())
    return {"label": best, "confidence": float(probabilities[0, best]), "ood_score": float(score[0])}


@floor.post("/predict")
async def floor_predict(file: UploadFile) -> dict:
    data = await file.read()
    return {"label": 0, "confidence": 1.0, "ood_score": float(len(data) > 0)}
