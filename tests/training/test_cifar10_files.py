"""``--dataset cifar10`` from CIFAR-10 as image files: the folder layout and the
same folders zipped as cifar10-jpg.zip train through the CLI; a missing data set is one clear paragraph."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cifar10_fixture import CLASSES, offline_env

from modelfile import read_metadata
from training.run.checkpoint import load as load_checkpoint


def zipped(files: Path, root: Path) -> Path:
    """The folder layout as root/cifar10-jpg.zip (train/<class>/*.jpg, test/<class>/*.jpg inside)."""
    root.mkdir()
    with zipfile.ZipFile(root / "cifar10-jpg.zip", "w") as z:
        for p in sorted(files.rglob("*.jpg")):
            z.write(p, p.relative_to(files).as_posix())
    return root


def train_cli(data_root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "acet",
            "--dataset",
            "cifar10",
            "--data-root",
            str(data_root),
            "--model",
            "resnet_small",
            "--pgd-steps",
            "1",
            "--epochs",
            "1",
            "--max-steps",
            "3",
            "--batch-size",
            "8",
            "--no-progress",
            "--no-download",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=300,
    )


@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_trains_from_either_image_file_layout(cifar10_files, tmp_path, layout):
    root = cifar10_files if layout == "folder" else zipped(cifar10_files, tmp_path / "data")
    onnx = tmp_path / "model.onnx"
    proc = train_cli(root, tmp_path / "run", "--export", str(onnx))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 3 and ckpt["config"]["dataset"] == "cifar10"
    info = ckpt["dataset"]
    assert tuple(info["classes"]) == CLASSES and info["channels"] == 3
    # 10 x 8 training images, 10 % held out for validation, the 30 test images untouched
    assert "72 train / 8 val / 30 test images" in proc.stdout, proc.stdout
    meta = read_metadata(onnx)
    assert tuple(meta.classes) == CLASSES and meta.dataset == "cifar10"
    assert (meta.input.channels, meta.input.height, meta.input.width, meta.input.color_mode) == (3, 32, 32, "RGB")


def test_a_missing_data_set_is_one_paragraph_naming_both_layouts(tmp_path):
    proc = train_cli(tmp_path / "nothing-here", tmp_path / "run")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("error: Data set 'cifar10'")
    assert "cifar-10-batches-py" in message  # torchvision's layout
    assert "train/<class>/" in message and "test/<class>/" in message and "cifar10-jpg.zip" in message  # the files'
    assert not (tmp_path / "run" / "last.pt").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_wrong_class_folders_are_named_in_the_message(cifar10_files, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(cifar10_files, root)
    for split in ("train", "test"):
        (root / split / "automobile").rename(root / split / "car")
    proc = train_cli(root, tmp_path / "run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "class folders" in proc.stderr and "'car'" in proc.stderr and "'automobile'" in proc.stderr
