"""The fast CIFAR-10 recipe's parts: the whitening layer, the schedule, lookahead across a kill and resume, and the
network exported and served. Short real runs on the tiny CIFAR-10 files of the conftest."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from cifar10_fixture import offline_env
from interrupted import kill_after_line
from PIL import Image
from servers import ServerThread, settings_for
from skimage import data as skdata

from training.config import TrainConfig
from training.data import datasets
from training.methods import build, spec
from training.nets import models
from training.nets.fastnet import WhiteningConv
from training.run.checkpoint import build_model
from training.run.checkpoint import load as load_checkpoint
from training.run.loop import steps_of
from training.run.optim import Optimisation
from training.run.precision import Precision
from training.run.recipes import RECIPES

CAT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "cat.jpg"


def photo_tiles(size: int = 32) -> torch.Tensor:
    """scikit-image's astronaut and coffee cut into size x size tiles: real photos, [N, 3, size, size] in [0, 1]."""
    tiles = []
    for photo in (skdata.astronaut(), skdata.coffee()):
        h, w = (s - s % size for s in photo.shape[:2])
        t = torch.from_numpy(photo[:h, :w]).permute(2, 0, 1).float() / 255
        tiles.append(t.unfold(1, size, size).unfold(2, size, size).permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size))
    return torch.cat(tiles)


def patch_second_moment(features: torch.Tensor) -> torch.Tensor:
    flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    return flat.T @ flat / len(flat)


def raw_patch_second_moment(images: torch.Tensor) -> torch.Tensor:
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, H', W', 2, 2
    return patch_second_moment(patches.permute(0, 1, 4, 5, 2, 3).reshape(len(images), -1, *patches.shape[2:4]))


def test_the_whitening_layer_whitens_the_patches_it_was_fitted_on():
    images = photo_tiles()
    layer = WhiteningConv(3, eps=1e-9)
    layer.fit(images)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, layer.weight)  # the bias (trained later, starts at 0) left out
    half = out.shape[1] // 2
    assert out.shape[1] == 2 * 3 * 2 * 2
    assert torch.allclose(out[:, half:], -out[:, :half])  # each direction with its negation
    moment = patch_second_moment(out[:, :half])
    assert torch.allclose(moment, torch.eye(half, dtype=moment.dtype), atol=1e-3), moment.diagonal()
    eig = torch.linalg.eigvalsh(raw_patch_second_moment(images))  # before: far from white (neighbours correlate)
    assert eig.max() / eig.min() > 100


def test_the_default_eps_damps_each_direction_by_its_eigenvalue_over_eigenvalue_plus_eps():
    images = photo_tiles()
    layer = WhiteningConv(3)
    layer.fit(images)
    with torch.no_grad():
        variances = patch_second_moment(torch.nn.functional.conv2d(images, layer.weight[:12])).diagonal()
    eigenvalues = torch.linalg.eigvalsh(raw_patch_second_moment(images)).flip(0)
    assert torch.allclose(variances, eigenvalues / (eigenvalues + layer.eps), atol=1e-4)


def test_fastnet_fits_its_whitening_from_training_images_and_keeps_it_frozen(cifar10_files):
    splits = datasets.load("cifar10", cifar10_files, download=False)
    model = models.build("fastnet", splits.info, build(spec("plain")).make_head)
    before = model.backbone.whiten.weight.clone()
    models.fit_to_data(model, splits.train.x)
    assert not torch.equal(before, model.backbone.whiten.weight)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "backbone.whiten.weight" not in trainable and "backbone.whiten.bias" in trainable
    assert not any(n.endswith(("norm1.weight", "norm2.weight")) for n in trainable)  # BatchNorm has no scale
    conv = model.backbone.groups[1].conv1  # 64 -> 256: its first 64 filters start as the identity
    assert torch.equal(conv.weight[:64, :, 1, 1], torch.eye(64)) and conv.weight[:64, :, 0, 0].abs().sum() == 0


def fast_config(**overrides) -> TrainConfig:
    fields = {k: v for k, v in RECIPES["fast"].items()}
    return TrainConfig(dataset="cifar10", method=spec("plain"), device="cpu", progress=False, **{**fields, **overrides})


def test_the_fast_schedule_warms_up_then_decays_linearly_and_biases_learn_64x_faster():
    cfg = fast_config()
    per_epoch, total, epochs = steps_of(cfg, 45_000, 1)
    assert (per_epoch, total, epochs) == (87, 87 * 32, 32)  # 45,000 training images in batches of 512
    model = models.build(
        "fastnet",
        datasets.DatasetInfo("c", tuple("0123456789"), 3, 32, 32, (0.5,) * 3, (0.25,) * 3),
        build(spec("plain")).make_head,
    )
    optim = Optimisation.for_run(model, cfg, total, Precision("cpu", None))
    assert optim.opt.defaults["nesterov"] and len(optim.opt.param_groups) == 2
    lrs, bias_lrs = [], []
    for _ in range(total):
        lrs.append(optim.opt.param_groups[0]["lr"])
        bias_lrs.append(optim.opt.param_groups[1]["lr"])
        optim.opt.step()
        optim.sched.step()
    lrs = np.array(lrs)
    peak = int(0.23 * total)
    assert lrs[0] == pytest.approx(0.2 * 0.75) and lrs[peak] == pytest.approx(0.75) and lrs.argmax() == peak
    assert np.all(np.diff(lrs[: peak + 1]) > 0) and np.all(np.diff(lrs[peak:]) < 0)
    assert np.allclose(np.diff(lrs[peak:]), -(1 - 0.07) * 0.75 / (total - peak))  # linear, to lr x 0.07 at the end
    assert lrs[-1] == pytest.approx(0.75 * (0.07 + 0.93 / (total - peak)))
    assert np.allclose(np.array(bias_lrs), 64 * lrs)
    decays = [g["lr"] * g["weight_decay"] for g in optim.opt.param_groups]
    assert decays[0] == pytest.approx(decays[1])  # every parameter decays alike per step


def fast_cmd(data_root: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "training.acet",
        "--dataset",
        "cifar10",
        "--data-root",
        str(data_root),
        "--no-download",
        "--recipe",
        "fast",
        "--at-frac",
        "0",
        "--epochs",
        "4",
        "--batch-size",
        "12",
        "--lookahead",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]


def test_a_run_killed_mid_epoch_resumes_bit_exact_with_its_lookahead_state(cifar10_files, tmp_path):
    whole = subprocess.run(
        fast_cmd(cifar10_files, tmp_path / "whole"), capture_output=True, text=True, env=offline_env(), timeout=300
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "recipe fast" in whole.stdout
    cmd = fast_cmd(cifar10_files, tmp_path / "split")
    kill_after_line(cmd, "epoch 1/4", offline_env())  # epoch 1's checkpoint precedes its line: the kill lands later
    killed = load_checkpoint(tmp_path / "split" / "last.pt")
    assert killed["epoch"] < 3 and "lookahead" in killed
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=offline_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["step"] == b["step"] == 4 * (72 // 12)
    for part in ("model", "lookahead"):
        assert a[part].keys() == b[part].keys()
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part} {name}"
    for name, tensor in a["model"].items():  # the run ends on the slow weights: lookahead's last pull is complete
        if tensor.is_floating_point():
            assert torch.equal(tensor, a["lookahead"][name]), name


@pytest.fixture(scope="module")
def fastnet_ckpt(cifar10_files, runs_dir) -> Path:
    from training.run.loop import train

    return train(
        fast_config(
            data_root=str(cifar10_files), download=False, epochs=2, batch_size=12, out=str(runs_dir / "cifar10-fastnet")
        )
    )


def test_the_fast_network_exports_and_serves_a_real_jpeg(fastnet_ckpt, tmp_path):
    from modelfile import read_metadata
    from training.export import export_checkpoint

    ckpt = fastnet_ckpt
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    onnx_path = model_dir / "cifar10-plain-fastnet.onnx"
    export_checkpoint(ckpt, onnx_path, name=onnx_path.stem)
    meta = read_metadata(onnx_path)
    assert meta.input.height == meta.input.width == 32 and len(meta.classes) == 10 and meta.architecture == "fastnet"
    with Image.open(CAT) as im:  # the cat photo as a 32x32 JPEG: the service decodes exactly these pixels
        buf = io.BytesIO()
        im.convert("RGB").resize((32, 32), Image.BILINEAR).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    with (
        ServerThread(settings_for(model_dir, default_model=onnx_path.stem)) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        r = client.post("/predict", params={"top_k": 10}, files={"file": ("cat.jpg", jpeg, "image/jpeg")})
    assert r.status_code == 200, r.text
    [answer] = r.json()["predictions"]
    model, method, _ = build_model(load_checkpoint(ckpt))
    pixels = torch.from_numpy(np.array(Image.open(io.BytesIO(jpeg)))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        probs, score, _ = method.outputs(model.eval(), pixels)
    served = torch.tensor([answer["probabilities"][label] for label in meta.classes])
    assert torch.allclose(served, probs[0], atol=1e-4)
    assert answer["ood_score"] == pytest.approx(score.item(), abs=1e-4)
    assert answer["is_ood"] == (answer["ood_score"] > answer["threshold"])


def test_flip_tta_in_the_graph_sees_an_image_and_its_mirror_alike_and_says_so(fastnet_ckpt, tmp_path):
    from modelfile import open_session, read_metadata
    from training.evaluation.scorers import session_outputs
    from training.export import export_checkpoint

    plain, tta = tmp_path / "plain.onnx", tmp_path / "tta.onnx"
    export_checkpoint(fastnet_ckpt, plain)
    export_checkpoint(fastnet_ckpt, tta, tta="flip")
    assert "flip TTA" in read_metadata(tta).architecture and read_metadata(plain).architecture == "fastnet"
    images = photo_tiles()[:16]
    model, _, _ = build_model(load_checkpoint(fastnet_ckpt))
    with torch.no_grad():
        logits = 0.5 * (model.eval()(images) + model(images.flip(3)))  # a linear head: the mean of the two logits
    on_images, on_mirrored = (session_outputs(open_session(tta), x) for x in (images, images.flip(3)))
    probs, scores = on_images.probabilities, on_images.ood_score
    mirrored, mirrored_scores = on_mirrored.probabilities, on_mirrored.ood_score
    assert np.allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    assert np.allclose(probs, mirrored, atol=1e-5) and np.allclose(scores, mirrored_scores, atol=1e-5)
    unaugmented = session_outputs(open_session(plain), images).probabilities
    assert not np.allclose(unaugmented, mirrored, atol=1e-3)  # without TTA the mirror image is another input


def test_augmentation_translates_by_at_most_pad_flips_the_given_images_and_cuts_out_one_square():
    x = photo_tiles()[:6]
    flip = torch.tensor([True, False] * 3)
    out = datasets.augment(x, "crop_flip", pad=2, pad_mode="reflect", flip=flip, cutout=12)
    grey = (out == 0.5).all(1)  # [N, H, W]
    assert grey.sum((1, 2)).tolist() == [144] * 6  # one 12 x 12 square each
    rows, cols = grey.any(2), grey.any(1)
    assert (rows.sum(1) == 12).all() and (cols.sum(1) == 12).all()  # ... and a square, not scattered pixels
    plain = datasets.augment(x, "crop_flip", pad=2, pad_mode="reflect", flip=flip)
    for i in range(6):  # the uncut image is the original, mirrored where asked, shifted by at most 2 pixels
        source = x[i].flip(2) if flip[i] else x[i]
        padded = torch.nn.functional.pad(source[None], (2, 2, 2, 2), mode="reflect")[0]
        assert any(torch.equal(plain[i], padded[:, dy : dy + 32, dx : dx + 32]) for dy in range(5) for dx in range(5))
    assert torch.equal(datasets.alternating_flips(10, 0, 0), ~datasets.alternating_flips(10, 1, 0))
