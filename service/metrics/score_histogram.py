"""``oodserve_ood_score``: one histogram metric whose bucket bounds each model brings with it.

What an OOD score's numbers mean depends on the method (1 - max softmax lives in [0, 1); IsoMax+
distances sit around 3-5; an energy score is negative), so no fixed set of bounds fits every model,
and the service knows no method. The bounds come from the model file instead: quantiles of its
calibration scores (where in-distribution traffic falls, so drift shows), the threshold itself (so
``le=threshold`` counts exactly the accepted images), and steps beyond the threshold sized by the
calibration spread (where rejected traffic falls). Prometheus takes different ``le`` sets per
series; prometheus-client fixes buckets per metric object, so each model gets its own object and
this collector exposes them as one metric (with several workers, their files merge as any other).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric

from modelfile import Calibration, ModelMetadata

NAME = "oodserve_ood_score"
HELP = "OOD score of each image (higher = more likely out-of-distribution)"
IN_DISTRIBUTION_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
BEYOND_THRESHOLD = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0)  # multiples of the calibration spread


def score_buckets(calibration: Calibration) -> tuple[float, ...]:
    """Upper bounds for one model's scores (sorted, distinct, finite; +Inf is added by the client)."""
    scores = np.asarray(calibration.scores, dtype=np.float64)
    threshold = calibration.threshold
    inside = np.quantile(scores, IN_DISTRIBUTION_QUANTILES)
    spread = max(threshold - float(scores[0]), float(scores[-1] - scores[0]), abs(threshold) * 1e-3, 1e-6)
    beyond = threshold + spread * np.asarray(BEYOND_THRESHOLD)
    rounded = {float(f"{b:.4g}") for b in (scores[0], *inside, *beyond)}  # readable le labels...
    return tuple(sorted((rounded - {threshold}) | {threshold}))  # ...but the threshold exact


class ScoreHistograms:
    """Registered once in a registry; ``add(metadata)`` per loaded model; ``labels(model)`` as a Histogram's."""

    def __init__(self, registry: CollectorRegistry):
        self._by_model: dict[str, Histogram] = {}
        registry.register(self)

    def add(self, metadata: ModelMetadata, name: str | None = None) -> None:
        """(Re)create the histogram of the model served as ``name`` (default: the metadata's) with its
        file's bounds (a swapped model starts afresh)."""
        self._by_model[name or metadata.name] = Histogram(
            NAME, HELP, ["model"], buckets=score_buckets(metadata.calibration), registry=None
        )

    def labels(self, model: str):
        return self._by_model[model].labels(model)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(NAME, HELP, labels=["model"])]

    def collect(self) -> Iterator[Metric]:
        merged = HistogramMetricFamily(NAME, HELP, labels=["model"])
        for histogram in list(self._by_model.values()):
            for family in histogram.collect():
                merged.samples.extend(family.samples)
        yield merged
