"""The bundled CIFAR-10 models (models/cifar10-*.onnx: the classifier and its post-hoc v3 wrapping), and their int8
files (NAME-int8.onnx) where the checkout has them (``make models`` writes them), on the README's examples, through
the real service: scikit-image's cat is a cat and in distribution; a handwritten digit, a cup of coffee and a
scanned text page are rejected (the digit, near the threshold at p 0.04 in the fp32 file, may fall either side of it
in an int8 file: docs/results/int8.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import REPO

EXAMPLES = REPO / "docs" / "examples"
BUNDLED = sorted(p for p in (REPO / "models").glob("cifar10-*.onnx") if not p.stem.endswith("-int8"))
FILES = [p.stem for p in BUNDLED] + [f"{p.stem}-int8" for p in BUNDLED if p.with_name(f"{p.stem}-int8.onnx").is_file()]


def test_the_cifar10_classifier_and_its_posthoc_v3_are_bundled():
    assert [p.stem for p in BUNDLED] == ["cifar10-acet-oe-fastnet", "cifar10-photo-v3"]


@pytest.fixture(scope="module", params=FILES)
def model(request) -> str:
    return request.param


def ask(client, model: str, path: Path) -> dict:
    kind = "image/jpeg" if path.suffix == ".jpg" else "image/png"
    response = client.post(f"/predict?model={model}", files={"file": (path.name, path.read_bytes(), kind)})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    return prediction


def test_a_photo_of_a_cat_is_a_cat_in_distribution(client, model):
    p = ask(client, model, EXAMPLES / "cat.jpg")
    if "photo-v3" in model:  # its pretrained features find the clean photo unusual next to JPEG-q75 CIFAR (README)
        assert p["label"] == "cat" and p["p_value"] > 0.01, p
        return
    assert p["label"] == "cat" and not p["is_ood"], p
    assert p["ood_score"] <= p["threshold"] and p["p_value"] > 0.05


@pytest.mark.parametrize("name", ["digit-7.png", "coffee.jpg", "text-page.png"])
def test_a_digit_a_coffee_cup_and_a_page_of_text_are_rejected(client, model, name):
    p = ask(client, model, EXAMPLES / name)
    if name == "digit-7.png" and model.endswith("-int8"):  # p 0.04 in the fp32 file: an int8 file may accept it, barely
        assert p["is_ood"] == (p["ood_score"] > p["threshold"]) and p["p_value"] < 0.1, p
        return
    # rejected at the stored threshold, which keeps 95 % of in-distribution images: p-value below 0.05
    assert p["is_ood"] and p["ood_score"] > p["threshold"] and p["p_value"] < 0.05, p
