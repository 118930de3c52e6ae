"""OOD detection metrics, in-distribution as the positive class (as in Hein et al. 2019).

Scores here are *confidences* (higher = more in-distribution): callers pass ``-ood_score``.
scikit-learn does the curve work; these functions only fix the convention.

OpenOOD and pytorch-ood take the other convention: OOD is the positive class and the score is
``ood_score`` itself. Their AUROC is the same number (swapping both the labels and the sign of the
score leaves the ranking of every ID/OOD pair unchanged), their AUPR-In / AUPR-Out are our
``aupr_in`` / ``aupr_out``, and their FPR@95TPR is measured at 95 % of *OOD* inputs detected, which
is a different operating point from ours (95 % of in-distribution inputs kept) and can differ.
``fpr_at_tpr_ood_positive`` computes theirs; ``docs/evaluation.md`` has the whole mapping.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def _labels_scores(id_conf: np.ndarray, ood_conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.ones(len(id_conf)), np.zeros(len(ood_conf))])
    return y, np.concatenate([np.asarray(id_conf, np.float64), np.asarray(ood_conf, np.float64)])


def auroc(id_conf: np.ndarray, ood_conf: np.ndarray) -> float:
    return float(roc_auc_score(*_labels_scores(id_conf, ood_conf)))


def auroc_standard_error(a: float, n_id: int, n_ood: int) -> float:
    """Hanley & McNeil's (1982) standard error of an AUROC ``a`` measured on n_id and n_ood samples."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return float(np.sqrt((a * (1 - a) + (n_id - 1) * (q1 - a * a) + (n_ood - 1) * (q2 - a * a)) / (n_id * n_ood)))


def fpr_at_tpr(id_conf: np.ndarray, ood_conf: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD inputs accepted when the threshold keeps ``tpr`` of in-distribution inputs."""
    fpr, tprs, _ = roc_curve(*_labels_scores(id_conf, ood_conf))
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def aupr_in(id_conf: np.ndarray, ood_conf: np.ndarray) -> float:
    return float(average_precision_score(*_labels_scores(id_conf, ood_conf)))


def aupr_out(id_conf: np.ndarray, ood_conf: np.ndarray) -> float:
    y, s = _labels_scores(id_conf, ood_conf)
    return float(average_precision_score(1 - y, -s))


def fpr_at_tpr_ood_positive(id_conf: np.ndarray, ood_conf: np.ndarray, tpr: float = 0.95) -> float:
    """OpenOOD / pytorch-ood's FPR@95: share of ID inputs flagged when ``tpr`` of OOD inputs are flagged."""
    y, s = _labels_scores(id_conf, ood_conf)
    fpr, tprs, _ = roc_curve(1 - y, -s)
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def roc(id_conf: np.ndarray, ood_conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) points of the ROC curve, in-distribution positive."""
    fpr, tprs, _ = roc_curve(*_labels_scores(id_conf, ood_conf))
    return fpr, tprs


def mmc(probabilities: np.ndarray) -> float:
    """Mean maximum confidence: the average over inputs of the largest class probability."""
    p = np.asarray(probabilities, np.float64)
    return float(p.max(1).mean()) if len(p) else float("nan")


def all_metrics(id_conf: np.ndarray, ood_conf: np.ndarray) -> dict[str, float]:
    """AUROC, FPR at 95 % TPR, AUPR-in and AUPR-out of one ID/OOD pair (NaN when a side is empty)."""
    if len(id_conf) == 0 or len(ood_conf) == 0:
        return {k: float("nan") for k in ("auroc", "fpr95", "aupr_in", "aupr_out")}
    return {
        "auroc": auroc(id_conf, ood_conf),
        "fpr95": fpr_at_tpr(id_conf, ood_conf, 0.95),
        "aupr_in": aupr_in(id_conf, ood_conf),
        "aupr_out": aupr_out(id_conf, ood_conf),
    }


def break_ties(confidences: list[np.ndarray], tie_breakers: list[np.ndarray]) -> list[np.ndarray]:
    """Joint dense ranks of several score arrays, ordered by confidence, then by the tie-breaker.

    A float32 ``1 - max softmax`` is exactly 0 for every input whose top logit leads by more than ~17,
    so a confident test set and confident adversarial noise tie on it and AUROC reads ~0.5 where the
    model in fact ranks the noise *above* the test set. Ranking equal confidences by a finer key
    computed from the logits (the float64 log max-softmax) keeps the confidence's order wherever it
    is strict and resolves only exact ties. Ranks are computed over all arrays together, so any
    pair of returned arrays is ordered consistently.
    """
    sizes = [len(c) for c in confidences]
    conf = np.concatenate([np.asarray(c, np.float64) for c in confidences])
    tb = np.concatenate([np.asarray(t, np.float64) for t in tie_breakers])
    if len(conf) == 0:
        return [np.zeros(0) for _ in sizes]
    order = np.lexsort((tb, conf))  # primary key last
    c, t = conf[order], tb[order]
    new_value = np.r_[True, (c[1:] != c[:-1]) | (t[1:] != t[:-1])]
    ranks = np.empty(len(conf))
    ranks[order] = np.cumsum(new_value)
    return np.split(ranks, np.cumsum(sizes)[:-1])
