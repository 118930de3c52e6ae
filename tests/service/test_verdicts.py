"""The reject flag fails closed: a score that is not a finite number is OOD, and never reaches the
metrics' sums (one NaN would make them NaN for the life of the process). Checked through the real
path: a model file whose ood_score the test picks by the pixels it uploads to ``/predict``."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
from PIL import Image
from samples import encode
from servers import ServerThread, metric, settings_for
from stand_in import metadata, write_model

NAME = "pixel-score"
THRESHOLD = 0.5


def image(p0: int, p1: int, p2: int) -> bytes:
    """A 28x28 grey image whose model score is (p0 - p1) / p2, the pixels read as value / 255."""
    pixels = np.full((28, 28), 255, dtype=np.uint8)
    pixels.flat[:3] = (p0, p1, p2)
    return encode(Image.fromarray(pixels))


def test_non_finite_scores_are_ood_and_stay_out_of_the_histograms(tmp_path):
    write_model(tmp_path / f"{NAME}.onnx", metadata(NAME, threshold=THRESHOLD), score_of_pixels=True)
    # NaN (0/0), +inf, -inf, then a finite score under the threshold and one over it.
    uploads = [image(0, 0, 0), image(255, 0, 0), image(0, 255, 0), image(64, 0, 255), image(255, 0, 255)]
    labels = {"model": NAME}

    def counts(text: str) -> tuple[float, ...]:
        return tuple(
            metric(text, name, **labels, **extra)
            for name, extra in [
                ("oodserve_ood_score_count", {}),
                ("oodserve_ood_score_sum", {}),
                ("oodserve_ood_p_value_sum", {}),
                ("oodserve_images_total", {"verdict": "ood"}),
                ("oodserve_images_total", {"verdict": "in"}),
            ]
        )

    with ServerThread(settings_for(tmp_path, default_model=NAME)) as server:
        before = counts(server.metrics())
        files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(uploads)]
        response = httpx.post(f"{server.url}/predict", files=files, timeout=30)
        after = counts(server.metrics())

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    scores = [p["ood_score"] for p in predictions]
    assert scores[:3] == [None, None, None]  # JSON has no NaN or infinity
    assert scores[3] == pytest.approx(64 / 255) and scores[4] == pytest.approx(1.0)
    assert [p["is_ood"] for p in predictions] == [True, True, True, False, True]
    assert [p["p_value"] for p in predictions][:3] == [0.0, 0.0, 0.0]
    assert all(math.isfinite(p["p_value"]) for p in predictions)
    assert all(math.isfinite(v) for v in after)
    observed, score_sum, _, ood, in_distribution = (a - b for a, b in zip(after, before, strict=True))
    assert observed == 2 and score_sum == pytest.approx(64 / 255 + 1.0, rel=1e-5)  # only the finite scores
    assert (ood, in_distribution) == (4, 1)  # every verdict is counted
