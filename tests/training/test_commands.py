"""The training commands as a user types them: ``python -m training METHOD``, its ``python -m training.METHOD``
spelling, which no module file holds, and ``python -m training.evaluate``, the evaluation command's second name,
which runs ``python -m training.evaluation``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_the_training_command_lists_its_methods():
    proc = run("training", "--help")
    assert proc.returncode == 0 and "acet" in proc.stdout and "mcd" in proc.stdout
    assert run("training", "no-such-method").returncode != 0


@pytest.mark.parametrize(
    ("module", "method", "own_flag"),
    [
        ("training.acet", "acet", "--pgd-steps"),
        ("training.isomax", "isomax+", "--acet"),
        ("training.mcd", "mcd", "--finetune-lr"),
    ],
)
def test_a_method_s_module_name_runs_the_one_training_command(module, method, own_flag):
    proc = run(module, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m training {method} ") and own_flag in proc.stdout
    assert not (REPO / Path(*module.split("."))).with_suffix(".py").exists()


def test_the_evaluation_command_s_second_name_runs_it():
    proc = run("training.evaluate", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m training.evaluation ") and "--checkpoint" in proc.stdout
    assert proc.stderr.strip() == "note: this command is python -m training.evaluation"


def test_an_unknown_name_is_still_no_module():
    proc = run("training.no_such_command")
    assert proc.returncode == 1 and "No module named training.no_such_command" in proc.stderr


def test_importing_a_method_s_command_runs_nothing():
    import training.acet

    assert callable(training.acet.main) and training.acet.__spec__.origin == "python -m training acet"
