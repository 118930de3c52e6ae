"""The model's answer for a batch of images and the reject decision on it, as one value that the
batcher cuts into each request's rows and the routes turn into responses."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from modelfile import Calibration, signature
from service.metrics.prometheus import ModelMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdicts:
    """The model's answer for ``n`` images, plus the reject decision from the calibration."""

    probabilities: np.ndarray  # [n, K]
    ood_score: np.ndarray  # [n]
    is_ood: np.ndarray  # [n] bool
    p_value: np.ndarray  # [n]

    def tensors(self) -> dict[str, np.ndarray]:
        """The verdicts as the contract's served tensors, by name (modelfile.signature)."""
        return {
            signature.PROBABILITIES.name: self.probabilities,
            signature.OOD_SCORE.name: self.ood_score,
            signature.IS_OOD.name: self.is_ood,
        }

    def rows(self, start: int, stop: int) -> Verdicts:
        part = slice(start, stop)
        return Verdicts(self.probabilities[part], self.ood_score[part], self.is_ood[part], self.p_value[part])


def judge(
    model: str, calibration: Calibration, metrics: ModelMetrics, probabilities: np.ndarray, scores: np.ndarray
) -> Verdicts:
    """The reject decision, failing closed: a score that is not a finite number is OOD."""
    finite = np.isfinite(scores)
    is_ood = calibration.is_ood(scores)
    p_values = np.where(finite, calibration.p_values(np.where(finite, scores, 0.0)), 0.0)
    if not finite.all():
        log.warning("model '%s' returned %d non-finite ood_score(s); flagged as OOD", model, (~finite).sum())
    # Histogram sums stay numbers: a NaN observed once would make them NaN for the process's life.
    metrics.observe_verdicts(scores[finite], p_values[finite], is_ood)
    return Verdicts(probabilities, scores, is_ood, p_values)
