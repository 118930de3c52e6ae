"""Outlier exposure's data (``--outliers``): real photos in a folder and in a zip, cut into seeded crops;
groups held out; one-line refusals; the options surviving the checkpoint; a real training run using them."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from training.cli import main as cli_main
from training.data.imagefiles import NoImages
from training.data.outliers import KEEP_SIDE, OutlierImages
from training.evaluation import ood_sets
from training.run.checkpoint import build_model
from training.run.checkpoint import load as load_checkpoint

skimage_data = pytest.importorskip("skimage.data")

# two groups (first folders), as wallpapers.zip groups by Debian package; sizes from 300 px to 2048 px wide
PHOTOS = {
    "nature/chelsea.jpg": "chelsea",
    "nature/coffee.png": "coffee",
    "nature/rocket.jpg": "rocket",
    "city/astronaut.jpg": "astronaut",
    "city/camera.png": "camera",
}


@pytest.fixture(scope="module")
def outlier_folder(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("outliers")
    for rel, name in PHOTOS.items():
        (root / rel).parent.mkdir(exist_ok=True)
        im = Image.fromarray(getattr(skimage_data, name)())
        if name == "astronaut":  # one large picture: it is shrunk on reading, never kept whole
            im = im.resize((2048, 2048))
        im.save(root / rel)
    return root


@pytest.fixture(scope="module")
def outlier_zip(outlier_folder: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zip") / "photos.zip"
    with zipfile.ZipFile(path, "w") as z:
        for rel in PHOTOS:
            z.write(outlier_folder / rel, rel)
    return path


def test_a_folder_and_its_zip_give_the_same_seeded_crops(outlier_folder, outlier_zip):
    folder, archive = OutlierImages.read(outlier_folder), OutlierImages.read(outlier_zip)
    assert len(folder) == len(archive) == 5 and sorted(folder.groups) == sorted(archive.groups)
    assert all(min(im.size) <= KEEP_SIDE for im in folder.images)  # bounded memory: shrunk on reading
    a = folder.crops(64, (3, 32, 32), torch.Generator().manual_seed(0))
    b = archive.crops(64, (3, 32, 32), torch.Generator().manual_seed(0))
    c = archive.crops(64, (3, 32, 32), torch.Generator().manual_seed(1))
    assert a.shape == (64, 3, 32, 32) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.std(dim=(1, 2, 3)).min() > 0  # crops of real photos, not blank


def test_crops_span_scales_and_come_in_the_models_mode(outlier_folder):
    images = OutlierImages.read(outlier_folder, only=("city",))
    boxes = images.boxes(400, 28, torch.Generator().manual_seed(0))
    sides = np.array([box[2] - box[0] for _, box, _ in boxes])
    short = np.array([min(images.images[i].size) for i, _, _ in boxes])
    assert (sides >= 28).all() and (sides <= short).all()
    assert (sides < 40).mean() > 0.1 and (sides > 0.8 * short).mean() > 0.1  # texture patches and whole scenes
    assert {flip for *_, flip in boxes} == {True, False}
    for i, (x0, y0, x1, y1), _ in boxes:
        assert x0 >= 0 and y0 >= 0 and x1 <= images.images[i].size[0] and y1 <= images.images[i].size[1]
    gray = images.crops(8, (1, 28, 28), torch.Generator().manual_seed(0))
    assert gray.shape == (8, 1, 28, 28)


def test_held_out_groups_are_never_cropped_for_training(outlier_folder):
    train = OutlierImages.read(outlier_folder, holdout=("city",))
    assert set(train.groups) == {"nature"} and len(train) == 3
    held = ood_sets.build(
        ood_sets.outlier_set(outlier_folder, ("city",)),
        ood_sets.InputShape(3, 32, 32),
        id_images=None,
        data_root=".",
        n=10,
        seed=0,
    )
    ((name, x),) = held.items()
    assert name.endswith("#city") and x.shape == (10, 3, 32, 32)


def test_bad_outlier_paths_are_one_line_errors(outlier_folder, tmp_path):
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("README.txt", "no images here")
    not_image = tmp_path / "broken"
    (not_image / "g").mkdir(parents=True)
    (not_image / "g" / "a.jpg").write_bytes(b"not a jpeg")
    cases = [
        (tmp_path / "missing", "neither a folder nor a .zip"),
        (empty, "no images"),
        (not_image, "a.jpg in broken is not a readable image"),
    ]
    for path, message in cases:
        with pytest.raises(NoImages, match=message) as e:
            OutlierImages.read(path)
        assert "\n" not in str(e.value)
    with pytest.raises(NoImages, match=r"no group.*suburb.*groups .* are city, nature"):
        OutlierImages.read(outlier_folder, holdout=("suburb",))
    with pytest.raises(NoImages, match=r"no images .* left"):
        OutlierImages.read(outlier_folder, holdout=("city", "nature"))


def test_the_cli_refuses_a_bad_outlier_path_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"error: --outliers: .*neither a folder nor a \.zip"):
        cli_main(
            "acet",
            [
                "--dataset",
                "mnist5k",
                "--model",
                "lenet",
                "--pgd-steps",
                "0",
                "--outliers",
                str(tmp_path / "nope.zip"),
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
            ],
        )
    assert not (tmp_path / "run").exists()


def test_a_run_with_outliers_stores_them_in_its_spec_and_resumes(outlier_zip, tmp_path):
    out = tmp_path / "oe"
    argv = [
        "--dataset",
        "mnist5k",
        "--model",
        "lenet",
        "--pgd-steps",
        "0",
        "--noise-loss",
        "uniform",
        "--noise",
        "fractal,dead-leaves,spectral,patch-shuffled,blended",
        "--outliers",
        str(outlier_zip),
        "--outlier-share",
        "0.25",
        "--outlier-holdout",
        "city",
        "--batch-size",
        "256",
        "--out",
        str(out),
        "--no-progress",
    ]
    cli_main("acet", [*argv, "--epochs", "1"])
    ckpt = load_checkpoint(out / "last.pt")
    stored = ckpt["config"]["method"]
    assert stored["outliers"] == str(outlier_zip) and stored["outlier_share"] == 0.25
    assert tuple(stored["outlier_holdout"]) == ("city",) and len(stored["noise"]) == 5
    _, method, _ = build_model(ckpt)
    assert method.spec() == {**stored, "noise": tuple(stored["noise"]), "outlier_holdout": ("city",)}
    assert method.outliers() is not None and set(method.outliers().groups) == {"nature"}
    cli_main("acet", [*argv, "--epochs", "2", "--resume"])  # the resumed run rebuilds the outliers from its spec
    assert load_checkpoint(out / "last.pt")["step"] == 2 * ckpt["step"]


def test_outlier_crops_fill_their_share_of_the_noise_batch(outlier_folder):
    from training.data.noise import noise_batch

    images = OutlierImages.read(outlier_folder)
    base = torch.zeros(4, 3, 32, 32)
    x = noise_batch(base, 40, torch.Generator().manual_seed(0), ("blurred-uniform",), images, 0.25)
    crops = images.crops(10, (3, 32, 32), torch.Generator().manual_seed(0))
    assert torch.equal(x[:10], crops)  # the first draws of the generator, unrescaled: real photos as they are
    assert np.isclose(x[10:].amin(dim=(1, 2, 3)).max().item(), 0.0)  # the rest: rescaled noise, as before


def test_acet_moves_only_the_attacked_families_and_keeps_outliers_as_drawn(outlier_folder):
    from training.methods import build, spec
    from training.methods.acet import ACET

    moved = []

    class Recording(ACET):
        def attack(self, model, noise, families):
            moved.append((len(noise), list(families)))
            return super().attack(model, noise, families)

    method = Recording(
        build(
            spec(
                "acet",
                pgd_steps=2,
                noise=("blurred-uniform", "blended"),
                attacked=("blurred-uniform",),
                outliers=str(outlier_folder),
                outlier_share=0.5,
            )
        ).config
    )
    method.generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    noise = method.noise(model, torch.rand(8, 3, 32, 32), 40)
    # 20 outlier crops, the other 20 split over two families: the 10 uniform images alone go through PGD
    assert noise.shape == (40, 3, 32, 32) and moved == [(10, ["blurred-uniform"])]
    assert (noise[10:].std(dim=(1, 2, 3)) > 0).all() and noise.min() >= 0 and noise.max() <= 1
