"""The runtime refuses model files that break the contract, and says so when it fell back to CPU."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from stand_in import metadata, write_corrupt_model, write_model

from modelfile import InvalidModelFile
from service.models.runtime import ModelRuntime

CPU = ["CPUExecutionProvider"]


def test_loads_runs_and_applies_the_thread_count(tmp_path):
    runtime = ModelRuntime(write_model(tmp_path / "m.onnx"), threads=1, providers=CPU)
    runtime.warm_up(max_batch_size=8)
    out = runtime.run(np.zeros((3, 1, 28, 28), dtype=np.float32))
    assert out["probabilities"].shape == (3, 10) and out["ood_score"].shape == (3,)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert runtime.session.get_session_options().intra_op_num_threads == 1


def test_warns_loudly_when_a_requested_provider_is_not_used(tmp_path, caplog):
    path = write_model(tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING, logger="service.models.runtime"):
        runtime = ModelRuntime(path, threads=1, providers=["CUDAExecutionProvider", *CPU])
    assert runtime.providers == CPU
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "CUDAExecutionProvider" in warning.getMessage() and "runs it on ['CPUExecutionProvider']" in (
        warning.getMessage()
    )


def test_no_warning_when_cpu_was_asked_for(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="service.models.runtime"):
        ModelRuntime(write_model(tmp_path / "m.onnx"), threads=1, providers=CPU)
    assert not caplog.records


@pytest.mark.parametrize(
    ("build", "complaint"),
    [
        (lambda p: write_model(p, metadata("m"), graph_classes=7), "lists 10 classes"),
        (lambda p: write_model(p, metadata("m"), graph_channels=3), "has shape"),
        (lambda p: write_model(p, output_names=("probabilities", "score")), "graph outputs missing"),
        (lambda p: write_corrupt_model(p), "not a loadable ONNX model"),
    ],
    ids=["classes-mismatch", "input-shape-mismatch", "missing-output", "corrupt"],
)
def test_refuses_files_that_break_the_contract(tmp_path, build, complaint):
    path = tmp_path / "m.onnx"
    build(path)
    with pytest.raises(InvalidModelFile, match=complaint) as e:
        ModelRuntime(path, threads=1, providers=CPU)
    assert "m.onnx" in str(e.value)


def test_refuses_a_graph_without_a_dynamic_batch_dimension(tmp_path):
    runtime = ModelRuntime(write_model(tmp_path / "m.onnx", fixed_batch=True), threads=1, providers=CPU)
    with pytest.raises(InvalidModelFile, match="batch of 4 images fails"):
        runtime.warm_up(max_batch_size=4)
