"""How training.evaluation.selection picks the model to ship from its validation measurements."""

from __future__ import annotations

from training.evaluation.selection import AUROC_TIE, Measured, choose


def test_the_best_worse_of_two_auroc_wins_among_accurate_enough_candidates():
    plain = Measured("plain", 0.90, 0.80, 0.10)
    robust = Measured("acet", 0.87, 0.95, 0.90)
    too_costly = Measured("heavy", 0.80, 1.00, 1.00)  # 10 points below the best accuracy
    assert choose([plain, robust, too_costly]) is robust


def test_a_tie_on_the_worse_auroc_is_broken_by_the_other_one():
    # the CIFAR-10 bundled run: every candidate beaten by PGD-moved noise, by amounts 500 images cannot resolve
    ceda = Measured("ceda", 0.8478, 1.0000, 0.0019)
    acet = Measured("acet", 0.8550, 0.8732, 0.0028)
    assert acet.worst_auroc - ceda.worst_auroc < AUROC_TIE
    assert choose([Measured("plain", 0.8578, 0.7686, 0.0002), ceda, acet]) is ceda
    assert choose([ceda, Measured("acet", 0.8550, 0.8732, 0.0028 + 2 * AUROC_TIE)]).label == "acet"
