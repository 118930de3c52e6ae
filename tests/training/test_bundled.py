"""The bundled models' recipe code (``training.bundled``) on a small real checkpoint: the card's OOD images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelfile import read_metadata
from training import card_fields
from training.bundled import ood_images, spec_line
from training.methods import spec

REPO = Path(__file__).resolve().parents[2]


def test_card_sets_that_draw_on_the_test_split_get_it(plain_ckpt):
    # uniform / permuted / noise are built from the model's own test images (a card once crashed on them)
    sets = ood_images(("uniform", "permuted"), "unused", plain_ckpt, adversarial=False)
    sets.update(ood_images(("noise",), "unused", plain_ckpt, adversarial=False))
    assert set(sets) == {"uniform", "permuted", "noise"}
    for x in sets.values():
        assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1


def test_a_spec_line_names_every_option_and_the_wrapped_method():
    line = spec_line(spec("acet", base=spec("isomax+"), pgd_steps=0, noise=("blurred-uniform", "strokes")))
    assert "pgd_steps=0" in line and "noise=blurred-uniform+strokes" in line
    assert line.index("base: name=isomax+") > line.index("noise=")


def test_the_card_says_which_ood_rows_were_of_a_kind_seen_in_training():
    from training.bundled import seen_in_training

    oe = spec(
        "acet", pgd_steps=0, noise=("blurred-uniform", "blurred-permuted", "strokes", "fractal"), outliers="w.zip"
    )
    acet = {**oe, "pgd_steps": 5}
    assert seen_in_training("uniform", oe) == "yes" and seen_in_training("mnist", oe).startswith("imitated")
    assert seen_in_training("permuted", {**oe, "noise": ["uniform", "strokes"]}) == "no"  # a spec with former names
    assert seen_in_training("scaled-noise x1", {**oe, "noise": ["uniform", "strokes"]}) == "yes"
    assert seen_in_training("fashion-mnist", oe) == "no" and seen_in_training("textures", oe) == "no"
    assert seen_in_training("wallpapers (unseen packages)", oe).startswith("the kind, not these images")
    assert seen_in_training("adv-noise", oe).startswith("no") and seen_in_training("adv-noise", acet).startswith("yes")
    assert seen_in_training("fashion-mnist", spec("plain")).startswith("no")


def test_card_fields_finds_the_plan_that_made_each_bundled_file_and_refuses_any_other(tmp_path):
    """`python -m training.card_fields` rebuilds a bundled file's OOD sets from the plan that made it: the plan is
    found by the file's name and method, and a file no plan made is refused by name, before anything is measured."""
    for path in sorted((REPO / "models").glob("*.onnx")):
        meta = read_metadata(path)
        if meta.posthoc is None:
            plan, _, method = card_fields.plan_of(meta, str(tmp_path))
            assert method.label == meta.method and plan.file_name(method.label) == meta.name
            assert list(method.negatives) == meta.training_negatives
    stranger = read_metadata(REPO / "models" / "mnist-acet-lenet.onnx").model_copy(update={"name": "someone-elses"})
    with pytest.raises(card_fields.NoPlan, match="someone-elses"):
        card_fields.plan_of(stranger, str(tmp_path))
