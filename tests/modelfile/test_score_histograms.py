"""The model file's score histograms (``evaluation.histograms``, what a card's plots are drawn from) and the
calibration histogram the service derives from the p-value table: every image counted once, the tails and
non-finite scores in the end bins, and on the bundled files the curves they draw agree with the stored table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelfile import (
    ID_ROW,
    OUT_OF_DOMAIN_SCORE,
    Calibration,
    InvalidModelFile,
    ModelMetadata,
    ScoreHistograms,
    read_metadata,
)

MODELS = sorted((Path(__file__).resolve().parents[2] / "models").glob("*.onnx"))


def test_every_score_is_counted_once_with_the_tails_in_the_end_bins():
    rng = np.random.default_rng(0)
    inside = rng.normal(0, 1, 2000)
    far = np.r_[rng.normal(6, 1, 500), [np.nan, np.inf, -np.inf, OUT_OF_DOMAIN_SCORE, -50.0]]
    h = ScoreHistograms.from_scores({ID_ROW: inside, "far": far}, bins=32)
    assert len(h.edges) == 33 and all(b > a for a, b in zip(h.edges, h.edges[1:], strict=False))
    assert sum(h.counts[ID_ROW]) == 2000 and sum(h.counts["far"]) == 505
    # the guard's float32 max does not stretch the axis: it is counted in the last bin
    assert h.edges[-1] < 20 and h.edges[0] > -10
    assert h.counts["far"][0] >= 1  # -50, below the range
    # NaN, +-inf (the reject rule fails them closed) and the guard's score: rejected, so drawn at the far end
    assert h.counts["far"][-1] >= 4


def test_one_value_everywhere_still_gets_a_bin():
    h = ScoreHistograms.from_scores({ID_ROW: np.zeros(10), "x": np.zeros(3)}, bins=4)
    assert h.edges[0] < 0 < h.edges[-1] and sum(h.counts[ID_ROW]) == 10


@pytest.mark.parametrize(
    "bad",
    [
        {"edges": [0.0, 1.0, 1.0], "counts": {ID_ROW: [1, 2]}},
        {"edges": [0.0, 1.0, 2.0], "counts": {ID_ROW: [1, 2, 3]}},
        {"edges": [0.0, float("nan")], "counts": {ID_ROW: [1]}},
        {"edges": [0.0, 1.0], "counts": {ID_ROW: [-1]}},
    ],
)
def test_a_malformed_histogram_is_refused(bad):
    with pytest.raises(ValueError):
        ScoreHistograms.model_validate(bad)


def test_the_calibration_histogram_counts_the_calibration_images_and_spans_the_threshold():
    scores = np.random.default_rng(1).gamma(2.0, 1.0, 5000)
    cal = Calibration.from_scores(scores, 0.95)
    h = cal.histogram(bins=40)
    counts = np.asarray(h.counts["calibration"])
    assert abs(counts.sum() - 5000) <= 40
    assert h.edges[0] <= cal.threshold <= h.edges[-1]
    above = counts[np.searchsorted(h.edges, cal.threshold) :].sum()
    assert 0.03 * 5000 < above < 0.08 * 5000  # about the 5 % the threshold rejects, to a bin's width


def binned_auroc(id_counts: list[int], ood_counts: list[int]) -> float:
    """AUROC with in-distribution positive, ties within a bin counted half: P(ood score > id score)."""
    i, o = np.asarray(id_counts, float), np.asarray(ood_counts, float)
    below_ood = np.cumsum(i) - i  # id images in lower bins than each ood bin
    return float((o * (below_ood + 0.5 * i)).sum() / (i.sum() * o.sum()))


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_each_bundled_files_histograms_agree_with_its_table(path):
    """What the card draws is what the table says: each row's AUROC off the bins is the stored one, to the bins'
    resolution; the file names its training negatives."""
    meta = read_metadata(path)
    h = meta.evaluation.histograms
    assert h is not None, f"{path.name} has no histograms: python -m training.card_fields"
    assert meta.training_negatives, path.name
    assert set(h.counts) - {ID_ROW} <= set(meta.evaluation.ood)
    for name, counts in h.counts.items():
        if name != ID_ROW:
            assert binned_auroc(h.counts[ID_ROW], counts) == pytest.approx(meta.evaluation.ood[name].auroc, abs=0.02)


def test_a_file_with_a_histogram_row_of_the_wrong_length_is_not_an_oodserve_file():
    meta = read_metadata(MODELS[0])
    doc = meta.model_dump()
    doc["evaluation"]["histograms"]["counts"][ID_ROW] = [1, 2]
    with pytest.raises(InvalidModelFile, match=r"evaluation\.histograms"):
        ModelMetadata.from_json(json.dumps(doc))
