"""The training noise: its families, its sharp share, and a model's family choice surviving the checkpoint."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from training.data.noise import DEFAULT_FAMILIES, SHARP_SHARE, noise_batch, strokes
from training.methods import build, spec
from training.methods.acet import add_noise_options


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
    x = noise_batch(images, 9, torch.Generator().manual_seed(0), ("blurred-uniform", "blurred-permuted", "strokes"))
    dark = (x < 0.05).float().flatten(1).mean(1)
    assert (dark[6:] > 0.6).all()  # the last third: strokes on black
    with pytest.raises(ValueError, match="noise families"):
        noise_batch(images, 4, None, ("blurred-uniform", "plaid"))


def test_the_noise_flag_reaches_the_spec_and_refuses_unknown_families():
    p = argparse.ArgumentParser()
    add_noise_options(p)
    args = p.parse_args(["--noise", "blurred-uniform,strokes", "--pgd-steps", "0"])
    assert args.noise == ("blurred-uniform", "strokes")
    with pytest.raises(SystemExit):
        p.parse_args(["--noise", "plaid"])


def test_a_checkpoint_keeps_the_noise_families(tmp_path):
    method = build(spec("acet", pgd_steps=0, noise=("blurred-uniform", "strokes")))
    path = tmp_path / "spec.pt"
    torch.save({"method": method.spec()}, path)
    stored = torch.load(path, weights_only=True)["method"]  # how training.run.checkpoint reads it
    assert build(stored).config.noise == ("blurred-uniform", "strokes")
    assert build(json.loads(json.dumps(stored))).config.noise == ("blurred-uniform", "strokes")  # ONNX metadata: a list
    older = {k: v for k, v in spec("acet").items() if k != "noise"}  # a spec without the option
    assert build(older).config.noise == ("blurred-uniform", "blurred-permuted")


def test_a_spec_stored_with_the_former_family_names_trains_the_same_noise():
    """The blurred families were once ``uniform`` and ``permuted``, the names of the raw OOD sets: a checkpoint's
    spec written then still builds, under the new names, and draws the very same images."""
    former = {**spec("acet", pgd_steps=0), "noise": ["uniform", "permuted", "strokes"], "attacked": ["uniform"]}
    method = build(former)
    assert method.config.noise == ("blurred-uniform", "blurred-permuted", "strokes")
    assert method.config.attacked == ("blurred-uniform",) and method.spec()["noise"][0] == "blurred-uniform"
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    draws = [
        noise_batch(images, 12, torch.Generator().manual_seed(0), families)
        for families in (former["noise"], method.config.noise)
    ]
    assert torch.equal(*draws)
    p = argparse.ArgumentParser()
    add_noise_options(p)
    assert p.parse_args(["--noise", "uniform,permuted"]).noise == DEFAULT_FAMILIES  # old commands still run


def test_a_spec_with_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="noise families"):
        build(spec("acet", noise=("blurred-uniform", "plaid")))


NEW_FAMILIES = ("fractal", "dead-leaves", "spectral", "patch-shuffled", "blended")


def test_each_outlier_family_is_seeded_in_range_and_not_blank():
    images = torch.rand(16, 3, 32, 32)
    for family in NEW_FAMILIES:
        a = noise_batch(images, 24, torch.Generator().manual_seed(0), (family,))
        b = noise_batch(images, 24, torch.Generator().manual_seed(0), (family,))
        c = noise_batch(images, 24, torch.Generator().manual_seed(1), (family,))
        assert a.shape == (24, 3, 32, 32) and a.min() >= 0 and a.max() <= 1, family
        assert torch.equal(a, b) and not torch.equal(a, c), family
        assert a.std(dim=(1, 2, 3)).min() > 0.01, family
    gray = noise_batch(torch.rand(4, 1, 28, 28), 8, torch.Generator().manual_seed(0), NEW_FAMILIES)
    assert gray.shape == (8, 1, 28, 28)


def test_patch_shuffled_images_keep_their_tiles_and_lose_their_layout():
    from training.data.noise import shuffle_patches

    x = torch.rand(8, 3, 32, 32)
    y = shuffle_patches(x, torch.Generator().manual_seed(0))
    assert torch.equal(x.flatten(1).sort(1).values, y.flatten(1).sort(1).values)  # the same pixels
    assert (x != y).flatten(1).any(1).all()  # moved in every image


def test_blended_images_are_convex_mixtures_of_two_training_images():
    images = torch.stack([torch.full((1, 4, 4), v) for v in (0.0, 1.0)])
    x = noise_batch(images, 200, torch.Generator().manual_seed(0), ("blended",))
    values = x.flatten(1)
    assert (values.std(1) == 0).all()  # a blend of two flat images is flat
    mixed = values[:, 0][(values[:, 0] > 0) & (values[:, 0] < 1)]
    assert len(mixed) > 50 and mixed.min() >= 0.35 - 1e-6 and mixed.max() <= 0.65 + 1e-6


def test_spectral_noise_has_a_falling_power_spectrum_and_dead_leaves_flat_regions():
    from training.data import procedural

    g = torch.Generator().manual_seed(0)
    x = procedural.spectral(64, (1, 32, 32), "cpu", g)
    power = torch.fft.rfft2(x - x.mean(dim=(2, 3), keepdim=True)).abs().pow(2).mean(dim=(0, 1))
    assert power[1:3, 1:3].mean() > 100 * power[12:17, 12:17].mean()  # 1/f^alpha, alpha >= 1: low ones dominate
    leaves = procedural.dead_leaves(16, (3, 32, 32), "cpu", g)
    colours = [len(torch.unique(im.flatten(1), dim=1)[0]) for im in leaves]
    assert max(colours) <= procedural.DEAD_LEAVES_DISCS + 1  # one colour per visible disc and the ground
    frac = procedural.fractal(16, (3, 32, 32), "cpu", g)
    assert ((frac - frac.mean(dim=(2, 3), keepdim=True)).abs() > 0.1).flatten(1).any(1).all()  # a shape on a ground
