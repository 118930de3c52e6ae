"""bench/cifar10_benchmark.py resumes across sessions: a finished stage is skipped (also from a
checkout elsewhere), an unfinished one resumes after its last epoch, a fine-tuning stage waits for its base,
and a folder trained with other flags is refused. Its training stages, on the tiny CIFAR-10 fixture."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import pytest

from training import cli
from training.run.checkpoint import load as load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = ["--budget", "cpu", "--epochs", "2", "--batch-size", "16", "--no-progress"]  # 72 train images: 4 steps/epoch


@pytest.fixture(scope="module")
def bench() -> dict:
    return runpy.run_path(str(REPO / "bench" / "cifar10_benchmark.py"), run_name="cifar10_benchmark")


def run(bench: dict, data: Path, runs: Path, stages: str, *extra: str) -> None:
    bench["main"](
        [
            "--data-root",
            str(data),
            "--runs",
            str(runs),
            "--out",
            str(runs.parent / "out"),
            *TINY,
            "--stages",
            stages,
            *extra,
        ]
    )


def stamp(runs: Path, label: str) -> dict:
    return json.loads((runs / label / "bench-stage.json").read_text())


def test_finished_stages_are_skipped_and_fine_tuning_starts_from_them(bench, cifar10_files, tmp_path, capsys):
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit, match="finish the CEDA stage first"):
        run(bench, cifar10_files, runs, "ACET")
    run(bench, cifar10_files, runs, "plain")
    plain = load_checkpoint(runs / "plain" / "last.pt")
    assert stamp(runs, "plain")["done"] and plain["step"] == 8
    assert "optimizer" not in plain  # slimmed: the weights are what later stages and the evaluation need
    moved = tmp_path / "elsewhere" / "runs"  # the committed folder, checked out at another path
    shutil.copytree(runs, moved)
    before = (moved / "plain" / "last.pt").read_bytes()
    capsys.readouterr()
    run(bench, cifar10_files, moved, "plain,CEDA")
    assert "plain: finished earlier" in capsys.readouterr().out
    assert (moved / "plain" / "last.pt").read_bytes() == before
    ceda = load_checkpoint(moved / "CEDA" / "last.pt")
    assert ceda["config"]["init_from"] == str(moved / "plain" / "last.pt") and ceda["step"] == 3 * 4  # 3 epochs
    assert ceda["config"]["method"]["pgd_steps"] == 0 and ceda["config"]["lr"] == 0.01
    with pytest.raises(SystemExit, match="other flags"):
        run(bench, cifar10_files, moved, "plain", "--batch-size", "8")


def test_an_unfinished_stage_resumes_after_its_last_epoch(bench, cifar10_files, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = bench["parse"](["--data-root", str(cifar10_files), "--runs", str(runs), *TINY])
    plain = next(m for m in bench["METHODS"] if m.label == "plain")
    argv = bench["train_argv"](plain, bench["budget_of"](args)[0], args, runs / "plain")
    # what a session that ran out of time after epoch 1 leaves behind: the epoch's checkpoint, an open stamp
    epochs = argv.index("--epochs") + 1
    cli.main("acet", [*argv[:epochs], "1", *argv[epochs + 1 :]])
    (runs / "plain" / "bench-stage.json").write_text(
        json.dumps({"recipe": bench["recipe"](argv), "done": False, "seconds": 5.0, "cpu_seconds": 5.0, "sessions": 0})
    )
    capsys.readouterr()
    run(bench, cifar10_files, runs, "plain")
    assert "resuming" in capsys.readouterr().out
    s = stamp(runs, "plain")
    assert s["done"] and s["sessions"] == 1 and s["seconds"] > 5.0
    assert load_checkpoint(runs / "plain" / "last.pt")["step"] == 8
