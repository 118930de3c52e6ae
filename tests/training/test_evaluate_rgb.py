"""``python -m training.evaluation`` on an RGB resnet_small, run as a user runs it: it
prints the test error, the share of in-distribution images the stored threshold rejects, and a row per OOD set
(digits as 3-channel 32x32, textures, noise, scaled noise and the adversarial sets) that are the model's own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from cifar10_fixture import offline_env

from modelfile import INPUT_NAME, OUTPUT_NAMES, open_session, read_metadata
from training.data import datasets

DIGITS = Path(__file__).resolve().parents[1] / "data" / "mnist-t10k-heldout"
SETS = (f"imagefolder:{DIGITS}", "uniform", "noise", "textures", "scaled-noise", "adv-noise", "adv-samples")


def test_evaluate_cli_on_an_rgb_model(rgb_resnet, cifar10_files, tmp_path):
    ckpt, onnx = rgb_resnet
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.evaluation",
            "--checkpoint",
            f"resnet={ckpt}",
            "--onnx",
            f"resnet={onnx}",
            "--ood",
            ",".join(SETS),
            "--data-root",
            str(cifar10_files),
            "--n-ood",
            "40",
            "--n-adv",
            "8",
            "--adv-steps",
            "3",
            "--out",
            str(tmp_path / "eval"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the numbers it prints are the model file's, on the 30 test images of the data root
    test = datasets.load("cifar10", cifar10_files, download=False).test
    probs, scores, _ = open_session(onnx).run(list(OUTPUT_NAMES), {INPUT_NAME: datasets.as_float(test.x).numpy()})
    error = float((probs.argmax(1) != test.y.numpy()).mean())
    rejected = float((scores > read_metadata(onnx).calibration.threshold).mean())
    out = proc.stdout
    assert f"resnet (TE {100 * error:.2f} %)" in out
    assert re.search(rf"\| ID test rejected \| {100 * rejected:.2f} % \|", out), out
    assert "| cifar10 test split (in-dist.) |" in out
    rows = [
        f"imagefolder:{DIGITS}",
        "uniform",
        "noise",
        "textures",
        "adv-noise",
        "adv-samples",
        *(f"scaled-noise x{a}" for a in (1, 10, 100, 1000)),
    ]
    for row in rows:
        assert f"| {row} |" in out, row
    result = json.loads((tmp_path / "eval" / "results.json").read_text())["models"][0]
    assert result["n_id"] == 30 and result["sets"]["textures"]["n"] == 40
    assert result["sets"][f"imagefolder:{DIGITS}"]["n"] == 23 and result["sets"]["adv-noise"]["n"] == 8
    assert all(0 <= result["sets"][r]["auroc"] <= 1 for r in rows if result["sets"][r]["n"])
