"""``python -m training.export --quantize int8``: the int8 file of a small real model is calibrated and
evaluated on itself, classifies and rejects like the float32 file through ``/predict`` and the v2 endpoint, and
keeps the softmax, the OOD score, the head and the input-domain guard in float."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import torch
import tritonclient.http as triton
from servers import REPO, ServerThread, settings_for

from modelfile import Calibration, open_session, read_metadata
from training import methods
from training.data import datasets
from training.evaluation.scorers import session_outputs
from training.export import export_checkpoint
from training.export.exporter import to_onnx
from training.export.quantize import float_nodes, to_int8
from training.nets import models
from training.run import checkpoint

HELD_OUT_DIGITS = sorted((REPO / "tests" / "data" / "mnist-t10k-heldout").glob("*.png"))


@pytest.fixture(scope="module")
def files(tmp_path_factory, plain_ckpt) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("int8")
    paths = {"fp32": out / "digits-fp32.onnx", "int8": out / "digits-int8.onnx"}
    export_checkpoint(plain_ckpt, paths["fp32"])
    export_checkpoint(plain_ckpt, paths["int8"], precision="int8")
    return paths


@pytest.fixture(scope="module")
def splits(plain_ckpt) -> datasets.Splits:
    return checkpoint.data_splits(checkpoint.load(plain_ckpt))


def test_the_int8_file_says_what_it_is_and_was_calibrated_on_itself(files, splits):
    fp32, int8 = read_metadata(files["fp32"]), read_metadata(files["int8"])
    assert (fp32.precision, fp32.quantized_from) == ("fp32", None)
    assert (int8.precision, int8.quantized_from) == ("int8", "plain/last.pt")
    assert files["int8"].stat().st_size < files["fp32"].stat().st_size / 3
    sess = open_session(files["int8"])
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(files["int8"])).graph.node}
    # the stored threshold and p-value table are the int8 graph's own validation scores, not the float graph's
    val_scores = session_outputs(sess, splits.val.x).ood_score
    assert int8.calibration == Calibration.from_scores(val_scores, 0.95)
    test_scores = session_outputs(sess, splits.test.x).ood_score
    assert int8.evaluation.id_reject_rate == pytest.approx(int8.calibration.rejected_share(test_scores), abs=1e-12)


def test_int8_keeps_the_float_files_accuracy_reject_rate_and_auroc(files):
    fp32, int8 = (read_metadata(files[k]).evaluation for k in ("fp32", "int8"))
    assert abs(int8.test_accuracy - fp32.test_accuracy) <= 0.005
    assert abs(int8.id_reject_rate - 0.05) <= 0.02 and abs(int8.id_reject_rate - fp32.id_reject_rate) <= 0.01
    assert set(int8.ood) == set(fp32.ood) == {"uniform", "permuted"}
    for name in fp32.ood:
        assert abs(int8.ood[name].auroc - fp32.ood[name].auroc) <= 0.005, name


def test_int8_serves_the_float_files_labels_through_predict_and_v2(files, splits):
    with ServerThread(settings_for(files["fp32"].parent, default_model="digits-fp32", max_batch_size=250)) as server:
        labels, rejected = {}, {}
        with httpx.Client(base_url=server.url, timeout=60) as client:
            listed = {m["name"]: m for m in client.get("/models").json()["models"]}
            assert listed["digits-int8"]["precision"] == "int8" and listed["digits-fp32"]["precision"] == "fp32"
            assert listed["digits-int8"]["quantized_from"] == read_metadata(files["int8"]).quantized_from
            for kind in files:
                labels[kind] = [
                    client.post(
                        f"/predict?model=digits-{kind}", files={"file": (p.name, p.read_bytes(), "image/png")}
                    ).json()["predictions"][0]["label"]
                    for p in HELD_OUT_DIGITS
                ]
        assert labels["int8"] == labels["fp32"]
        assert sum(f"label{label}" in p.stem for label, p in zip(labels["int8"], HELD_OUT_DIGITS, strict=True)) >= 21
        test = datasets.as_float(splits.test.x).numpy()
        client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
        for kind in files:
            answers = []
            for i in range(0, len(test), 250):
                tensor = triton.InferInput("images", [len(test[i : i + 250]), 1, 28, 28], "FP32")
                tensor.set_data_from_numpy(test[i : i + 250])
                result = client.infer(f"digits-{kind}", [tensor])
                answers.append((result.as_numpy("probabilities").argmax(1), result.as_numpy("is_ood")))
            labels[kind] = np.concatenate([a for a, _ in answers])
            rejected[kind] = float(np.concatenate([r for _, r in answers]).mean())
        client.close()
    assert (labels["int8"] == labels["fp32"]).mean() >= 0.995
    assert abs(rejected["int8"] - 0.05) <= 0.02 and abs(rejected["int8"] - rejected["fp32"]) <= 0.01
    assert rejected["int8"] == pytest.approx(read_metadata(files["int8"]).evaluation.id_reject_rate, abs=0.002)


@pytest.mark.parametrize("method", ["plain", "isomax+", "mcd"])
def test_softmax_score_head_and_guard_stay_float(tmp_path, method):
    info = datasets.DatasetInfo("mnist5k", datasets.DIGITS, 1, 28, 28, (0.13,), (0.31,))
    how = methods.build(methods.spec(method))
    torch.manual_seed(0)
    path = tmp_path / "model.onnx"
    to_onnx(models.build("lenet", info, how.make_head).eval(), how, info, path)
    kept = set(to_int8(path, np.random.default_rng(0).random((64, 1, 28, 28), np.float32)))
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    quantized = {
        n.name
        for n in graph.node
        for i in n.input
        if i in producer
        and producer[i].op_type == "DequantizeLinear"
        and producer[i].input[0] in {t.name for t in graph.initializer}
    }  # nodes with int8 weights
    assert {n.name for n in graph.node if n.op_type == "Conv"} <= quantized
    assert not kept & quantized
    assert {n.name for n in graph.node if n.name.startswith("domain_guard/") or n.op_type == "Softmax"} <= kept
    score_node = producer["ood_score"]
    assert score_node.name == "domain_guard/score" and producer[score_node.input[2]].op_type != "DequantizeLinear"
    assert kept == set(float_nodes(graph))  # the rule finds the same nodes in the quantized graph


def test_float16_weights_and_int8_are_refused_in_one_line(plain_ckpt, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.export",
            "--checkpoint",
            str(plain_ckpt),
            "--out",
            str(tmp_path / "x.onnx"),
            "--fp16-weights",
            "--quantize",
            "int8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 2 and not (tmp_path / "x.onnx").exists()
    assert run.stderr.splitlines() == [
        "error: --fp16-weights and --quantize int8 exclude each other (int8 weights are a quarter of float32's already)"
    ]
    bundled = tmp_path / "bundled.onnx"  # a file exported with --fp16-weights
    bundled.write_bytes((REPO / "models" / "mnist-acet-lenet.onnx").read_bytes())
    with pytest.raises(ValueError, match=r"bundled\.onnx stores float16 weights"):
        to_int8(bundled, np.zeros((1, 1, 28, 28), np.float32))
