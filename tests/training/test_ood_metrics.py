"""OOD metrics against hand-computed cases and a known distribution (ID = positive class)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from training.evaluation import ood_metrics as m


def test_perfect_separation():
    id_conf, ood_conf = np.array([0.9, 0.8, 0.7]), np.array([0.3, 0.2])
    assert m.auroc(id_conf, ood_conf) == 1.0
    assert m.fpr_at_tpr(id_conf, ood_conf) == 0.0
    assert m.aupr_in(id_conf, ood_conf) == 1.0
    assert m.aupr_out(id_conf, ood_conf) == 1.0


def test_perfectly_wrong():
    id_conf, ood_conf = np.array([0.1, 0.2]), np.array([0.8, 0.9, 0.95])
    assert m.auroc(id_conf, ood_conf) == 0.0
    assert m.fpr_at_tpr(id_conf, ood_conf) == 1.0


def test_chance_all_tied():
    """Every score equal: no threshold separates anything."""
    id_conf, ood_conf = np.full(4, 0.5), np.full(4, 0.5)
    assert m.auroc(id_conf, ood_conf) == 0.5
    assert m.fpr_at_tpr(id_conf, ood_conf) == 1.0  # keeping 95 % of ID keeps every OOD input
    assert m.aupr_in(id_conf, ood_conf) == pytest.approx(0.5)  # precision = share of ID everywhere
    assert m.aupr_out(id_conf, ood_conf) == pytest.approx(0.5)


def test_ties_hand_computed():
    """ID {1, 2, 3} vs OOD {2, 0}: 4 of 6 pairs won, 1 tied -> AUROC 4.5 / 6."""
    id_conf, ood_conf = np.array([1.0, 2.0, 3.0]), np.array([2.0, 0.0])
    assert m.auroc(id_conf, ood_conf) == pytest.approx(0.75)
    # keeping >= 95 % of ID needs the threshold at 1, which also accepts the OOD input at 2
    assert m.fpr_at_tpr(id_conf, ood_conf) == pytest.approx(0.5)
    # thresholds 3, 2, 1: (precision, recall) = (1, 1/3), (2/3, 2/3), (3/4, 1)
    assert m.aupr_in(id_conf, ood_conf) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 4)
    # OOD positive, score -conf: thresholds 0, -1, -2: (1, 1/2), (1/2, 1/2), (1/2, 1)
    assert m.aupr_out(id_conf, ood_conf) == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert m.mmc(np.array([[0.7, 0.3], [0.4, 0.6]])) == pytest.approx(0.65)


def test_random_scores_are_chance():
    rng = np.random.default_rng(0)
    id_conf, ood_conf = rng.random(50_000), rng.random(50_000)
    assert m.auroc(id_conf, ood_conf) == pytest.approx(0.5, abs=0.01)
    assert m.fpr_at_tpr(id_conf, ood_conf) == pytest.approx(0.95, abs=0.01)


def test_fpr95_on_known_gaussians():
    """ID ~ N(2, 1), OOD ~ N(0, 1): threshold 2 - z95, FPR = 1 - Phi(2 - z95), AUROC = Phi(2 / sqrt 2)."""
    rng = np.random.default_rng(1)
    id_conf, ood_conf = rng.normal(2.0, 1.0, 200_000), rng.normal(0.0, 1.0, 200_000)
    z95 = norm.ppf(0.95)
    assert m.fpr_at_tpr(id_conf, ood_conf) == pytest.approx(1 - norm.cdf(2.0 - z95), abs=0.004)  # 0.3613
    assert m.auroc(id_conf, ood_conf) == pytest.approx(norm.cdf(2.0 / np.sqrt(2.0)), abs=0.003)  # 0.9214
    # OpenOOD's operating point (95 % of OOD flagged): the same as ours for equal widths, by symmetry ...
    assert m.fpr_at_tpr_ood_positive(id_conf, ood_conf) == pytest.approx(norm.cdf(z95 - 2.0), abs=0.004)
    # ... and not on a narrower OOD distribution
    ood_narrow = rng.normal(0.0, 0.5, 200_000)
    ours = m.fpr_at_tpr(id_conf, ood_narrow)
    theirs = m.fpr_at_tpr_ood_positive(id_conf, ood_narrow)
    assert ours == pytest.approx(1 - norm.cdf((2.0 - z95) / 0.5), abs=0.004)
    assert theirs == pytest.approx(norm.cdf(0.5 * z95 - 2.0), abs=0.004)
    assert m.auroc(id_conf, ood_narrow) == pytest.approx(1 - m.auroc(ood_narrow, id_conf))


def test_break_ties_resolves_only_exact_ties():
    conf = [np.array([0.0, 0.0, -0.5]), np.array([0.0, -0.2])]
    finer = [np.array([-1e-9, -1e-12, -3.0]), np.array([-1e-15, -9.0])]
    id_rank, ood_rank = m.break_ties(conf, finer)
    # strict order of the confidence is kept; the three 0.0 ties are ordered by the finer key
    assert id_rank[2] < ood_rank[1] < id_rank[0] < id_rank[1] < ood_rank[0]
    assert m.auroc(np.array([0.0, 0.0]), np.array([0.0])) == 0.5
    assert m.auroc(id_rank[:2], ood_rank[:1]) == 0.0
    # equal on both keys stays tied
    a, b = (
        m.break_ties([np.array([1.0])], [np.array([2.0])]),
        m.break_ties([np.array([1.0, 1.0])], [np.array([2.0, 2.0])]),
    )
    assert a[0][0] == 1 and b[0][0] == b[0][1]


def test_empty_side_gives_nan():
    out = m.all_metrics(np.array([0.1, 0.2]), np.array([]))
    assert all(np.isnan(v) for v in out.values())


def test_auroc_standard_error_matches_the_spread_of_repeated_measurements():
    rng = np.random.default_rng(0)
    draws = [m.auroc(rng.normal(1.0, 1, 300), rng.normal(0.0, 1, 200)) for _ in range(2000)]
    se = m.auroc_standard_error(float(np.mean(draws)), 300, 200)
    assert abs(se - np.std(draws)) / np.std(draws) < 0.1
    assert m.auroc_standard_error(1.0, 300, 200) == 0.0
