"""Fine-tuning a pretrained network on a user's photos at their own size (training.nets.pretrained,
training.data.stream, training.run.phases): a tiny timm network stands in for an ImageNet one, its "pretrained"
weights a file the test writes; the photos a generated folder of mixed sizes and formats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from servers import ServerThread, settings_for

from modelfile import read_metadata
from service.pipeline.imaging import DecodeLimits, load_image
from training.run.checkpoint import build_model
from training.run.checkpoint import load as load_checkpoint

timm = pytest.importorskip("timm", reason="the pretrained extra: pip install '.[pretrained]'")

NET = "timm:test_efficientnet"  # 99k parameters, BatchNorm inside: what the fine-tuning schedule has to handle
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}
SIZES = [(40, 30), (64, 64), (300, 200), (120, 260), (90, 90), (500, 333)]


def photo(rng: np.random.Generator, colour: tuple[int, int, int], size: tuple[int, int]) -> Image.Image:
    """A noisy picture dominated by one colour, with a darker blob somewhere: a class a network can learn."""
    w, h = size
    arr = np.clip(np.array(colour) + rng.normal(0, 30, (h, w, 3)), 0, 255)
    cy, cx, r = rng.integers(0, h), rng.integers(0, w), max(4, min(w, h) // 4)
    yy, xx = np.mgrid[:h, :w]
    arr[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] *= 0.5
    return Image.fromarray(arr.astype(np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """PATH/{train,test}/<colour>/ with JPEGs and PNGs of six sizes (40 x 30 to 500 x 333)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 4)):
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                suffix = "jpg" if i % 3 else "png"
                photo(rng, colour, SIZES[i % len(SIZES)]).save(root / split / name / f"{i:02d}.{suffix}")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The stand-in's "ImageNet" weights: a seeded state_dict with a 1,000-class head, as a real file has, and
    BatchNorm statistics that fit its weights (measured on photos of every colour), as pretraining leaves them."""
    torch.manual_seed(1)
    net = timm.create_model("test_efficientnet", num_classes=1000)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a plain average over the batches below
    rng = np.random.default_rng(9)
    pictures = [photo(rng, colour, (48, 48)) for colour in COLOURS.values() for _ in range(16)]
    x = torch.from_numpy(np.stack([np.asarray(p) for p in pictures])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        net.train()((x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / 0.226)
    path = tmp_path_factory.mktemp("weights") / "test_efficientnet.pth"
    torch.save(net.state_dict(), path)
    return path


def run_training(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training.acet", "--at-frac", "0", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_pretrained_network_fine_tunes_on_a_folder_exports_at_its_size_and_is_served(folder, weights, tmp_path):
    onnx = tmp_path / "photos.onnx"
    done = run_training(
        "--model", NET, "--weights", str(weights), "--dataset", f"imagefolder:{folder}", "--image-size", "48",
        "--epochs", "3", "--head-epochs", "1", "--body-lr-scale", "0.5", "--bn", "frozen", "--batch-size", "8",
        "--lr", "0.05",
        "--cache-mb", "1", "--out", str(tmp_path / "run"), "--export", str(onnx),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["pretrained"] == weights.name  # where the weights came from; never a path
    meta = read_metadata(onnx)
    assert (meta.input.height, meta.input.width, meta.input.color_mode) == (48, 48, "RGB")
    assert meta.architecture == f"{NET} ({weights.name}, fine-tuned at 48 x 48 px)"
    assert meta.classes == sorted(COLOURS) and meta.dataset == f"imagefolder:{folder.name}"
    model, method, _ = build_model(ckpt)
    # the network's own normalisation (timm's ImageNet mean and std), not the folder's statistics
    assert model.normalize.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert meta.evaluation.test_accuracy >= 0.75  # learnt: chance is 1/3

    upload = tmp_path / "upload.jpg"
    photo(np.random.default_rng(5), COLOURS["green"], (640, 480)).save(upload)
    server = ServerThread(settings_for(tmp_path, default_model=onnx.stem))
    with server, httpx.Client(base_url=server.url, timeout=60) as client:
        body = client.post("/predict", files={"file": ("upload.jpg", upload.read_bytes(), "image/jpeg")})
    assert body.status_code == 200, body.text
    [p] = body.json()["predictions"]
    x = load_image(upload.read_bytes(), meta.input, DecodeLimits(10**7))[None]  # resized as the file says
    assert x.shape == (1, 3, 48, 48)
    with torch.no_grad():
        probs, score, _ = method.outputs(model.eval(), torch.from_numpy(x))
    assert p["label"] == meta.classes[int(probs[0].argmax())]
    assert p["probabilities"][p["label"]] == pytest.approx(float(probs[0].max()), abs=1e-4)
    assert p["ood_score"] == pytest.approx(float(score[0]), abs=1e-4)


def test_streaming_with_a_small_cache_gives_the_batches_of_a_folder_held_in_memory(folder):
    from training.data import decoding, stream

    listing = stream.Listing.of(folder / "train")
    batches = [torch.arange(0, 48, 3), torch.arange(47, 0, -2)]  # every image twice over the two batches
    everything = stream.Streamed(listing, 40, seed=3, workers=1, cache_mb=64)  # the whole folder fits
    small = stream.Streamed(listing, 40, seed=3, workers=2, cache_mb=1)  # 0.5 MiB a worker: most images fall out
    try:
        for epoch in (0, 1):
            held = list(everything.batches(epoch, batches))
            streamed = list(small.batches(epoch, batches))
            assert [b.shape for b in held] == [(16, 3, 40, 40), (24, 3, 40, 40)]
            for a, b in zip(held, streamed, strict=True):
                assert torch.equal(a, b)
        first, second = (next(everything.batches(e, batches[:1])) for e in (0, 1))
        assert not torch.equal(first, second)  # each epoch draws new crops
    finally:
        everything.close()
        small.close()
    # the reference, computed here without workers: the crop of the working image, flipped as drawn
    im = decoding.working_image(listing.files[3], 40)
    assert min(im.size) == 80  # twice the training size (the file: 120 x 260)
    box, flip = decoding.crop_box(im.width, im.height, 3, 0, 3)
    expected = np.asarray(im.resize((40, 40), Image.Resampling.BILINEAR, box=box))
    expected = (expected[:, ::-1] if flip else expected).transpose(2, 0, 1)
    assert np.array_equal(first[1].numpy(), expected)


def test_resume_is_bit_exact_across_the_end_of_the_head_phase(folder, weights, tmp_path):
    """3 epochs in one go == 1 epoch (the head alone), then --resume: the body unfreezes at the same step and
    the streamed crops of epochs 2 and 3 are the same."""
    from training.config import TrainConfig
    from training.methods import spec
    from training.run.loop import train

    run = dict(
        dataset=f"imagefolder:{folder}",
        model=NET,
        weights=str(weights),
        image_size=32,
        method=spec("plain"),
        batch_size=8,
        lr=0.01,
        lr_milestones=(),
        head_epochs=1,
        body_lr_scale=0.5,
        bn="frozen",
        cache_mb=1,
        device="cpu",
        progress=False,
    )
    whole = load_checkpoint(train(TrainConfig(**run, epochs=3, out=str(tmp_path / "whole"))))
    split_out = str(tmp_path / "split")
    after_head = load_checkpoint(train(TrainConfig(**run, epochs=1, out=split_out)))
    resumed = load_checkpoint(train(TrainConfig(**run, epochs=3, out=split_out, resume=True)))
    start = torch.load(weights, weights_only=True)
    body = {k.removeprefix("backbone.net."): v for k, v in after_head["model"].items() if k.startswith("backbone.")}
    # the head epoch left the body as pretrained, BatchNorm statistics included
    assert all(torch.equal(v, start[k]) for k, v in body.items() if k in start)
    assert resumed["step"] == whole["step"]
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    moved = [
        k for k, v in whole["model"].items() if k.startswith("backbone.") and not torch.equal(v, after_head["model"][k])
    ]
    assert moved and not any("running_" in k for k in moved)  # the body trained; bn="frozen" kept its statistics


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--model", "timm:no_such_net"], "unknown timm model 'no_such_net'"),
        (["--model", "resnet1000"], "unknown model 'resnet1000'"),
        (["--model", NET, "--weights", "nowhere/missing.pth"], "error: weights file not found: missing.pth"),
        (["--model", NET, "--weights", "WRONG"], "does not hold timm:test_efficientnet's weights"),
        (["--dataset", "moons", "--image-size", "32"], "--image-size 32: at least 8 pixels, and only for image"),
    ],
)
def test_each_refusal_is_one_line(flags, line, folder, tmp_path):
    if "WRONG" in flags:  # a real weights file, of another network
        wrong = tmp_path / "resnet.pth"
        torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), wrong)
        flags = [str(wrong) if f == "WRONG" else f for f in flags]
    done = run_training(
        "--dataset", f"imagefolder:{folder}", "--image-size", "32", *flags, "--epochs", "1", "--batch-size", "8",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert line in lines[-1] and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_an_unreadable_photo_in_the_folder_ends_the_run_in_one_line_naming_it(folder, weights, tmp_path):
    import shutil

    copy = tmp_path / "photos"
    shutil.copytree(folder, copy)
    (copy / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    done = run_training(
        "--dataset", f"imagefolder:{copy}", "--image-size", "32", "--model", NET, "--epochs", "1",
        "--batch-size", "8", "--weights", str(weights), "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: imagefolder: ") and "broken.jpg: not a readable image" in last, done.stderr[-2000:]
