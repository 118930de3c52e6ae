"""OOD detection metrics, in-distribution as the positive class (as in Hein et al. 2019).

Scores here are *confidences* (higher = more in-distribution): callers pass ``-ood_score``.
scikit-learn does the curve work; these functions only fix the convention.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def _labels_scores(id_conf: np.ndarray, ood_conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.ones(len(id_conf)), np.zeros(len(ood_conf))])
    return y, np.concatenate([np.asarray(id_conf, np.float64), np.asarray(ood_conf, np.float64)])


def auroc(id_conf: np.ndarray, ood_conf: np.ndarray) -> float:
    return float(roc_auc_score(*_labels_scores(id_conf, ood_conf)))


def fpr_at_tpr(id_conf: np.ndarray, ood_conf: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD inputs accepted when the threshold keeps ``tpr`` of in-distribution inputs."""
    fpr, tprs, _ = roc_curve(*_labels_scores(id_conf, ood_conf))
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def aupr_in(id_conf: np.ndarray, ood_conf: np.ndarray) -> float:
    return float(average_precision_score(*_labels_scores(id_conf, ood_conf)))


def aupr_out(id_conf: np.ndarray, ood_conf: np.ndarray) -> float:
    y, s = _labels_scores(id_conf, ood_conf)
    return float(average_precision_score(1 - y, -s))
