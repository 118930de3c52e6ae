"""The reject threshold keeps its promise: on held-out in-distribution images exchangeable with
the calibration split, the stored threshold rejects about 1 - tpr of them, the metadata reports what it
rejects, and the conformal p-values are uniform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from modelfile import INPUT_NAME, OUTPUT_NAMES, open_session, read_metadata
from training.data import datasets
from training.export import export_checkpoint


@pytest.fixture(scope="module")
def calibrated(isomax_wide_val_ckpt, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calibrated") / "mnist-isomax-lenet.onnx"
    export_checkpoint(isomax_wide_val_ckpt, path, score="auto")
    return path


def test_stored_threshold_rejects_what_it_promises_and_p_values_are_uniform(calibrated):
    meta = read_metadata(calibrated)
    assert meta.calibration.n == 2000 and meta.calibration.tpr == 0.95
    test = datasets.load("mnist5k", val_fraction=0.5).test  # held out: neither trained nor calibrated on
    _, scores, _ = open_session(calibrated).run(list(OUTPUT_NAMES), {INPUT_NAME: datasets.as_float(test.x).numpy()})
    rejected = float((scores > meta.calibration.threshold).mean())
    assert meta.evaluation.id_reject_rate == pytest.approx(rejected, abs=1e-9)
    # sampling noise of the realised rate: ~0.8 points (2,000 calibration and 1,000 test images)
    assert abs(rejected - 0.05) <= 0.025, rejected
    p = meta.calibration.p_values(scores)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert abs(float((p <= 0.05).mean()) - 0.05) <= 0.025


def test_halves_split_one_pool_at_random_into_two_disjoint_halves():
    pool = datasets.Split(torch.arange(5000).view(-1, 1, 1, 1), torch.arange(5000) % 10)
    a, b = datasets.halves(pool, seed=0)
    ia, ib = a.x.flatten().numpy(), b.x.flatten().numpy()
    assert len(ia) == len(ib) == 2500 and not set(ia) & set(ib)
    assert np.array_equal(ia, datasets.halves(pool, seed=0)[0].x.flatten().numpy())  # seeded
    # random, not a cut: each half spans the pool, so a drift along the file (MNIST's t10k) lands in both
    assert abs(float(np.mean(ia < 2500)) - 0.5) < 0.05
