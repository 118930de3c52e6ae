"""The training entry points as a user runs them: torchrun, kill and resume, missing data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from interrupted import kill_after_line
from torchrun_ranks import torchrun

from training.run.checkpoint import load as load_checkpoint

PLAIN = ["--dataset", "mnist5k", "--model", "lenet", "--at-frac", "0", "--no-progress"]


def env() -> dict[str, str]:
    # make "no network" certain: every HTTP(S) request goes to a closed local port
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "OMP_NUM_THREADS": "1",
    }


def test_torchrun_two_cpu_ranks_stay_identical_and_write_one_checkpoint(tmp_path):
    out = tmp_path / "ddp"
    run = torchrun(
        ["-m", "training", "acet", *PLAIN, "--max-steps", "6", "--batch-size", "32", "--out", str(out)],
        tmp_path / "logs",
        env(),
    )
    assert run.returncode == 0, run.failure()
    assert "ranks in sync: True" in run.stdout[0] and "x2" in run.stdout[0]
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "tb"]
    assert load_checkpoint(out / "last.pt")["step"] == 6


def test_a_killed_run_resumes_from_its_last_epoch(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.acet", *PLAIN, "--epochs", "3", "--batch-size", "256", "--out", str(out)]
    kill_after_line(cmd, "epoch 1/3", env())  # the kill comes right after epoch 1's checkpoint
    first = load_checkpoint(out / "last.pt")
    assert first["epoch"] == 0
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("epoch ")]
    assert "resuming" in resumed.stdout and epochs == ["2/3", "3/3"]
    final = load_checkpoint(out / "last.pt")
    assert final["epoch"] == 2 and final["step"] == 3 * first["step"]
    assert not torch.equal(final["model"]["head.weight"], first["model"]["head.weight"])


def test_missing_svhn_without_network_exits_with_a_clear_message(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "training.acet", "--dataset", "svhn", "--data-root", str(tmp_path), "--epochs", "1"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("error: Data set 'svhn'") and "train_32x32.mat" in message and str(tmp_path) in message
    assert len(message.splitlines()) == 1
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_resume_is_bit_exact_with_an_uninterrupted_run(tmp_path):
    """2 epochs in one go == 1 epoch, then --resume for the 2nd: the RNG states (here ACET's noise and PGD
    starts) travel in the checkpoint. A constant learning rate keeps the two schedules alike."""
    from training.config import TrainConfig
    from training.methods import spec
    from training.run.loop import train

    run = dict(
        dataset="mnist5k",
        model="lenet",
        method=spec("acet", at_frac=0.5, pgd_steps=1),
        batch_size=128,
        lr=0.05,
        lr_milestones=(),
        device="cpu",
        progress=False,
    )
    whole = load_checkpoint(train(TrainConfig(**run, epochs=2, out=str(tmp_path / "whole"))))
    train(TrainConfig(**run, epochs=1, out=str(tmp_path / "split")))
    resumed = load_checkpoint(train(TrainConfig(**run, epochs=2, out=str(tmp_path / "split"), resume=True)))
    assert resumed["step"] == whole["step"] == 2 * (3600 // 128)
    assert whole["model"].keys() == resumed["model"].keys()
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    momenta = zip(whole["optimizer"]["state"].values(), resumed["optimizer"]["state"].values(), strict=True)
    assert all(torch.equal(a["momentum_buffer"], b["momentum_buffer"]) for a, b in momenta)


def corrupt_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    torch.save({"model": {}, "config": {}, "dataset": {}}, good)
    files = {"garbage": b"not a checkpoint\n", "truncated": good.read_bytes()[:200], "empty": b""}
    paths = {}
    for kind, content in files.items():
        paths[kind] = tmp_path / kind / "last.pt"
        paths[kind].parent.mkdir()
        paths[kind].write_bytes(content)
    paths["code"] = tmp_path / "code" / "last.pt"  # a pickle that is more than tensors and plain data
    paths["code"].parent.mkdir()
    torch.save({"model": {}, "config": Path("x"), "dataset": {}}, paths["code"])
    return paths


def one_line_naming(proc: subprocess.CompletedProcess, path: Path) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith(f"error: {path}: "), message
    return message


def test_an_unreadable_checkpoint_ends_in_one_line_naming_the_file(tmp_path):
    for kind, path in corrupt_files(tmp_path).items():
        resume = subprocess.run(
            [sys.executable, "-m", "training.acet", *PLAIN, "--epochs", "1", "--resume", "--out", str(path.parent)],
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        message = one_line_naming(resume, path)
        assert "checkpoint" in message, (kind, message)
        export = subprocess.run(
            [sys.executable, "-m", "training.export", "--checkpoint", str(path), "--out", str(tmp_path / "x.onnx")],
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        one_line_naming(export, path)
    missing = tmp_path / "missing.pt"
    export = subprocess.run(
        [sys.executable, "-m", "training.export", "--checkpoint", str(missing), "--out", str(tmp_path / "x.onnx")],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    assert "no such checkpoint file" in one_line_naming(export, missing)
