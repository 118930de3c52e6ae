"""The training entry points as a user runs them: torchrun, kill and resume, missing data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from training.loop import load_checkpoint

PLAIN = ["--dataset", "mnist5k", "--model", "lenet", "--at-frac", "0", "--no-progress"]


def env() -> dict[str, str]:
    # make "no network" certain: every HTTP(S) request goes to a closed local port
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
            "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "OMP_NUM_THREADS": "1"}


def test_torchrun_two_cpu_ranks_stay_identical_and_write_one_checkpoint(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "-m", "training.acet", *PLAIN, "--max-steps", "6",
         "--batch-size", "32", "--out", str(out)],
        capture_output=True, text=True, env=env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ranks in sync: True" in proc.stdout and "x2" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "tb"]
    assert load_checkpoint(out / "last.pt")["step"] == 6


def test_a_killed_run_resumes_from_its_last_epoch(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.acet", *PLAIN, "--epochs", "3", "--batch-size", "256", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    try:
        for line in proc.stdout:  # block on the run's own output: the kill comes right after epoch 1's checkpoint
            if line.startswith("epoch 1/3"):
                break
        else:
            raise AssertionError("the run ended before finishing epoch 1")
    finally:
        proc.kill()
        proc.wait()
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
        capture_output=True, text=True, env=env(), timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("error: Data set 'svhn'") and "train_32x32.mat" in message and str(tmp_path) in message
    assert len(message.splitlines()) == 1
    shutil.rmtree(tmp_path, ignore_errors=True)
