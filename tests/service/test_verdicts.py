"""The reject flag fails closed: a score that is not a finite number is OOD, and never reaches the
metrics' sums (one NaN would make them NaN for the life of the process)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from servers import DEFAULT_MODEL, metric


def test_non_finite_scores_are_ood_and_stay_out_of_the_histograms(server):
    served = server.app.state.registry.models[DEFAULT_MODEL]
    threshold = served.metadata.calibration.threshold
    scores = np.array([np.nan, np.inf, -np.inf, threshold / 2, threshold * 2], dtype=np.float32)
    probabilities = np.full((len(scores), 10), 0.1, dtype=np.float32)
    labels = {"model": DEFAULT_MODEL}

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

    before = counts(server.metrics())
    verdicts = served.verdicts(probabilities, scores)
    after = counts(server.metrics())

    assert verdicts.is_ood.tolist() == [True, True, True, False, True]
    assert verdicts.p_value[:3].tolist() == [0.0, 0.0, 0.0] and np.isfinite(verdicts.p_value).all()
    assert all(math.isfinite(v) for v in after)
    observed, score_sum, _, ood, in_distribution = (a - b for a, b in zip(after, before, strict=True))
    assert observed == 2 and score_sum == pytest.approx(threshold * 2.5, rel=1e-5)  # only the finite scores
    assert (ood, in_distribution) == (4, 1)  # every verdict is counted
