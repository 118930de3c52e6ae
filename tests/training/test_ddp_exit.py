"""A torchrun run leaves no gloo thread behind once its process group is torn down.

A gloo thread still running while the interpreter finalises aborts the process now and then ("terminate
called without an active exception", SIGABRT, after all the work is done), which only shows under load.
The surviving threads are the deterministic symptom, so that is what is checked, on every rank, each rank's
report read from its own output file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from torchrun_ranks import torchrun

REPO = Path(__file__).resolve().parents[2]

# Registered before ``distributed`` registers its teardown, so (atexit runs last-in first-out) it looks
# after the teardown, as late as Python code can. One DDP step: DDP's own imports are what can pin the group
# (see training.run.loop.distributed).
RANK_SCRIPT = """
import atexit, os

def gloo_threads_at_exit():
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    print(f"rank {os.environ['RANK']}: gloo threads at exit {sorted(n for n in names if 'gloo' in n)}", flush=True)

atexit.register(gloo_threads_at_exit)

import torch
from training.run.loop import distributed

def train():  # the model goes with the function, as in training.run.loop.train: a live DDP holds the group
    distributed("cpu")
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
    model(torch.ones(4, 3)).sum().backward()

train()
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
def test_torchrun_ranks_exit_without_gloo_threads(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = torchrun([str(script)], tmp_path / "logs", env)
    assert run.returncode == 0, run.failure()
    for rank in (0, 1):
        lines = [line for line in run.stdout[rank].splitlines() if "gloo threads at exit" in line]
        assert lines == [f"rank {rank}: gloo threads at exit []"], run.stdout[rank]
