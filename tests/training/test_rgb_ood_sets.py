"""OOD sets for RGB 32x32 models: natural textures, and gray digit sets brought to 3 channels."""

from __future__ import annotations

from pathlib import Path

import torch

from training.evaluation import ood_sets
from training.evaluation.ood_sets import InputShape

RGB = InputShape(3, 32, 32)
DIGITS = Path(__file__).resolve().parents[1] / "data" / "mnist-t10k-heldout"


def test_textures_are_seeded_crops_of_every_texture_photo_at_the_models_shape():
    x = ood_sets.build("textures", RGB, id_images=torch.zeros(1, 3, 32, 32), data_root=".", n=40, seed=0)["textures"]
    assert ood_sets.known("textures") and x.shape == (40, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, ood_sets.texture_crops(RGB, 40, seed=0))
    assert not torch.equal(x, ood_sets.texture_crops(RGB, 40, seed=1))
    # 10 crops per photo, in TEXTURE_NAMES order: brick, grass, gravel are gray photos, the stain is colour
    per = 40 // len(ood_sets.TEXTURE_NAMES)
    assert torch.equal(x[: 3 * per, 0], x[: 3 * per, 2])
    assert (x[3 * per :, 0] - x[3 * per :, 2]).abs().mean() > 0.05
    # a texture patch, not a flat colour: every crop has structure
    assert x.flatten(1).std(1).min() > 0.02
    assert len({tuple(c.flatten()[:64].tolist()) for c in x}) == 40  # no crop drawn twice


def test_textures_for_a_gray_model():
    x = ood_sets.texture_crops(InputShape(1, 28, 28), 9, seed=0)
    assert x.shape == (9, 1, 28, 28) and x.min() >= 0 and x.max() <= 1


def test_gray_digits_become_3_channel_32x32_images():
    x = ood_sets.build(f"imagefolder:{DIGITS}", RGB, id_images=torch.zeros(1, 3, 32, 32), data_root=".", n=100, seed=0)[
        f"imagefolder:{DIGITS}"
    ]
    assert x.shape == (23, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert x.amax((1, 2, 3)).min() > 0.9 and x[:, :, :2].max() < 0.1  # white strokes on black, borders kept black
