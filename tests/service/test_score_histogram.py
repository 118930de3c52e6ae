"""oodserve_ood_score's buckets come from each model's calibration, so scores of any method spread over
them: the bundled softmax (ACET) model's and distance (IsoMax+) model's alike, and a made-up method whose
scores are negative."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from servers import REPO
from stand_in import metadata

from modelfile import Calibration, read_metadata
from service.metrics.prometheus import Metrics
from service.metrics.score_histogram import score_buckets

BUNDLED = sorted((REPO / "models").glob("*.onnx"))


def buckets_after(meta, scores: np.ndarray) -> dict[float, float]:
    """Cumulative bucket counts of one model's oodserve_ood_score after observing ``scores``."""
    metrics = Metrics()
    model = metrics.for_model(meta)
    model.observe_verdicts(scores, np.full(len(scores), 0.5), scores > meta.calibration.threshold)
    [family] = [
        f
        for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        if f.name == "oodserve_ood_score"
    ]
    return {
        float(s.labels["le"]): s.value
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels["model"] == meta.name
    }


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_in_distribution_scores_spread_over_buckets_and_the_threshold_is_one(path):
    meta = read_metadata(path)
    scores = np.asarray(meta.calibration.scores, dtype=np.float32)  # what in-distribution traffic looks like
    counts = buckets_after(meta, scores)
    assert meta.calibration.threshold in counts
    filled = np.diff([0.0, *counts.values()])
    assert (filled > 0).sum() >= 6, counts  # not all in one or two buckets, whatever the score's range
    accepted = counts[meta.calibration.threshold] / len(scores)
    assert accepted == pytest.approx(meta.calibration.tpr, abs=0.02)
    # rejected traffic far beyond the threshold still lands in finite buckets, spread out
    far = meta.calibration.threshold + (meta.calibration.threshold - scores.min()) * np.array([0.3, 3.0, 30.0])
    beyond = buckets_after(meta, far.astype(np.float32))
    assert len({v for le, v in beyond.items() if le != float("inf")}) == 4  # 0, then each point in its own step


def test_bounds_follow_any_score_range():
    negative = Calibration(threshold=-2.0, tpr=0.95, n=100, scores=list(np.linspace(-9.0, -1.5, 100)))
    bounds = score_buckets(negative)
    assert bounds == tuple(sorted(set(bounds))) and -2.0 in bounds
    assert bounds[0] <= -8.9 and bounds[-1] > 100  # the ID range, and far beyond the threshold
    assert metadata("m").calibration.threshold in score_buckets(metadata("m").calibration)
