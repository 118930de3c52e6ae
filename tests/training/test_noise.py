"""The training noise: its families, its sharp share, and a model's family choice surviving the checkpoint."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from training.methods import build, spec
from training.methods.acet import add_noise_options
from training.noise import SHARP_SHARE, noise_batch, strokes


def high_frequency(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontally adjacent pixels, per image."""
    return (x[..., 1:] - x[..., :-1]).abs().flatten(1).mean(1)


def test_default_noise_is_uniform_and_permuted_with_a_sharp_share():
    images = torch.rand(64, 3, 32, 32)
    x = noise_batch(images, 2000, torch.Generator().manual_seed(0))
    assert x.shape == (2000, 3, 32, 32) and x.min() == 0 and x.max() == 1
    # blurred images (sigma >= 1) have adjacent-pixel differences far below raw U[0,1] noise's ~1/3
    sharp = (high_frequency(x) > 0.15).float().mean().item()
    assert abs(sharp - SHARP_SHARE) < 0.04


def test_strokes_are_thin_white_lines_on_black():
    x = strokes(500, (1, 28, 28), "cpu", torch.Generator().manual_seed(0))
    ink = (x > 0.5).float().flatten(1).mean(1)
    assert x.min() == 0 and x.max() == 1
    assert (ink > 0).all() and ink.median() < 0.2  # every image has a stroke; most of it stays black
    assert (x[:, :, 0, :] > 0.5).float().mean() < 0.05  # the strokes keep off the border, like written digits


def test_families_split_the_batch_evenly():
    images = torch.full((8, 1, 28, 28), 0.5)
    x = noise_batch(images, 9, torch.Generator().manual_seed(0), ("uniform", "permuted", "strokes"))
    dark = (x < 0.05).float().flatten(1).mean(1)
    assert (dark[6:] > 0.6).all()  # the last third: strokes on black
    with pytest.raises(ValueError, match="noise families"):
        noise_batch(images, 4, None, ("uniform", "plaid"))


def test_the_noise_flag_reaches_the_spec_and_refuses_unknown_families():
    p = argparse.ArgumentParser()
    add_noise_options(p)
    args = p.parse_args(["--noise", "uniform,strokes", "--pgd-steps", "0"])
    assert args.noise == ("uniform", "strokes")
    with pytest.raises(SystemExit):
        p.parse_args(["--noise", "plaid"])


def test_a_checkpoint_keeps_the_noise_families(tmp_path):
    method = build(spec("acet", pgd_steps=0, noise=("uniform", "strokes")))
    path = tmp_path / "spec.pt"
    torch.save({"method": method.spec()}, path)
    stored = torch.load(path, weights_only=True)["method"]  # how training.checkpoint reads it
    assert build(stored).config.noise == ("uniform", "strokes")
    assert build(json.loads(json.dumps(stored))).config.noise == ("uniform", "strokes")  # ONNX metadata: a list
    older = {k: v for k, v in spec("acet").items() if k != "noise"}  # written before the option existed
    assert build(older).config.noise == ("uniform", "permuted")


def test_a_spec_with_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="noise families"):
        build(spec("acet", noise=("uniform", "plaid")))
