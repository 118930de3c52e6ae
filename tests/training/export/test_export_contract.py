"""The model file contract: torch and onnxruntime agree, the stored threshold rejects what it says it
does, and a file with bad metadata is refused with the field named."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy import stats

from modelfile import (
    ID_ROW,
    METADATA_KEY,
    OUTPUT_NAMES,
    InvalidModelFile,
    metadata_from_props,
    read_metadata,
    write_metadata,
)
from training.data import datasets
from training.export import export_checkpoint
from training.run.checkpoint import build_model
from training.run.checkpoint import load as load_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory, plain_ckpt, acet_ckpt, isomax_ckpt):
    out = tmp_path_factory.mktemp("onnx")
    runs = (
        ("plain", plain_ckpt, None),
        ("acet", acet_ckpt, None),
        ("isomax", isomax_ckpt, None),
        ("isomax-entropy", isomax_ckpt, "entropy"),
        ("isomax-projection", isomax_ckpt, "projection"),
    )
    return {
        name: (ckpt, export_checkpoint(ckpt, out / f"{name}.onnx", score=score) and out / f"{name}.onnx", score)
        for name, ckpt, score in runs
    }


@pytest.mark.parametrize("name", ["plain", "acet", "isomax", "isomax-entropy", "isomax-projection"])
def test_onnxruntime_matches_torch_on_all_outputs(exported, name):
    ckpt, path, score = exported[name]
    model, method, _ = build_model(load_checkpoint(ckpt))
    if score:
        method = method.with_score(score)
    model.eval()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = datasets.as_float(datasets.load("mnist5k").test.x[:64])
    images[-8:] = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # some OOD inputs too
    for n in (1, 7, 64):
        x = images[:n] if n < 64 else images
        with torch.no_grad():
            expected = method.outputs(model, x)
        got = sess.run(list(OUTPUT_NAMES), {"images": x.numpy()})
        for out_name, e, g in zip(OUTPUT_NAMES, expected, got, strict=True):
            assert g.shape == tuple(e.shape), (out_name, n)
            assert np.abs(g - e.numpy()).max() <= 1e-4, (out_name, n)


def test_stored_threshold_rejects_five_percent_of_held_out_in_distribution_images(exported):
    _, path, _ = exported["plain"]
    meta = read_metadata(path)
    assert meta.calibration.tpr == 0.95 and meta.calibration.split == "validation"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    test = datasets.as_float(datasets.load("mnist5k").test.x).numpy()
    _, scores, _ = sess.run(list(OUTPUT_NAMES), {"images": test})
    flagged = float((scores > meta.calibration.threshold).mean())
    assert 0.03 <= flagged <= 0.07, flagged
    # the metadata reports what the stored threshold does on the test split, not a quantile of it
    assert meta.evaluation.id_reject_rate == pytest.approx(flagged, abs=1e-9)
    assert {"uniform", "permuted"} <= set(meta.evaluation.ood)
    assert all(0.0 <= r.accepted <= 1.0 for r in meta.evaluation.ood.values())
    # conformal p-values of in-distribution images are ~uniform: about 5 % fall below 0.05
    p_values = meta.calibration.p_values(scores)
    assert 0.02 <= float((p_values < 0.05).mean()) <= 0.08
    # and the metadata carries the uniformity test of exactly these p-values
    assert meta.evaluation.id_p_value_uniformity == pytest.approx(stats.kstest(p_values, "uniform").pvalue, rel=1e-9)


def test_metadata_describes_the_model(exported):
    for name, method, score_word in (
        ("plain", "plain", "softmax"),
        ("acet", "acet", "softmax"),
        ("isomax", "isomax+", "distance"),
    ):
        meta = read_metadata(exported[name][1])
        assert meta.method == method and score_word in meta.score
        assert meta.classes == [str(i) for i in range(10)] and meta.dataset == "mnist5k"
        assert (meta.input.channels, meta.input.height, meta.input.width, meta.input.color_mode) == (1, 28, 28, "L")
        assert meta.calibration.n == 400 and meta.calibration.scores == sorted(meta.calibration.scores)
        assert meta.evaluation.test_accuracy > 0.9 and {"uniform", "permuted"} <= set(meta.evaluation.ood)


def test_the_file_carries_what_its_card_page_draws(exported):
    """Score histograms of the test split and every OOD set it was evaluated on (each image counted once, the curves
    they draw agreeing with the table), and the negatives training showed the network, in words."""
    for name in ("plain", "acet"):
        meta = read_metadata(exported[name][1])
        h = meta.evaluation.histograms
        assert set(h.counts) == {ID_ROW, *meta.evaluation.ood}
        assert sum(h.counts[ID_ROW]) == int(meta.evaluation.test_split.split("(")[1].split()[0])
        for row, counts in h.counts.items():
            if row != ID_ROW:
                i, o = np.asarray(h.counts[ID_ROW], float), np.asarray(counts, float)
                binned = (o * (np.cumsum(i) - i / 2)).sum() / (i.sum() * o.sum())
                assert binned == pytest.approx(meta.evaluation.ood[row].auroc, abs=0.03), (name, row)
    assert read_metadata(exported["plain"][1]).training_negatives == []
    negatives = read_metadata(exported["acet"][1]).training_negatives
    assert negatives and all("noise" in kind for kind in negatives)
    assert any("moved by PGD" in kind for kind in negatives)


def good_props(path) -> dict:
    return dict(ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("calibration"), "calibration"),
        (lambda d: d["calibration"].update(threshold="high"), "calibration.threshold"),
        (lambda d: d["calibration"].update(scores=[0.3, 0.1, 0.2]), "calibration.scores"),
        (lambda d: d["input"].update(channels=4), "input.channels"),
        (lambda d: d["input"].update(color_mode="RGB"), "input"),
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d.update(classes=["only-one"]), "classes"),
        (lambda d: d.update(unexpected=1), "unexpected"),
    ],
)
def test_malformed_metadata_is_refused_naming_the_field(exported, edit, field):
    doc = json.loads(good_props(exported["plain"][1])[METADATA_KEY])
    edit(doc)
    with pytest.raises(InvalidModelFile, match=f"metadata field '{field}'"):
        metadata_from_props({METADATA_KEY: json.dumps(doc)})


def test_missing_or_broken_metadata_is_refused(exported, tmp_path):
    with pytest.raises(InvalidModelFile, match=f"metadata field '{METADATA_KEY}' is missing"):
        metadata_from_props({})
    with pytest.raises(InvalidModelFile, match="not valid JSON"):
        metadata_from_props({METADATA_KEY: "{oops"})
    # a real file whose metadata was stripped
    import onnx

    proto = onnx.load(str(exported["plain"][1]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(InvalidModelFile, match="is missing"):
        read_metadata(bare)
    # and one rewritten through the exporter's own writer still validates
    write_metadata(bare, read_metadata(exported["plain"][1]))
    assert read_metadata(bare).name == "plain"


def test_check_command_prints_metadata_and_runs_the_model(exported):
    proc = subprocess.run(
        [sys.executable, "-m", "training.export", "--check", str(exported["isomax"][1])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"method": "isomax+"' in proc.stdout and "onnxruntime: batch of 8" in proc.stdout
