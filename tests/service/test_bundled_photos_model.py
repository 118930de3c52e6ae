"""The bundled CIFAR-10 model (models/cifar10-*.onnx) on the README's example files, through the real
service: scikit-image's cat is a cat and in distribution; a handwritten digit, a cup of coffee and a scanned text
page are rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import REPO

EXAMPLES = REPO / "docs" / "examples"
BUNDLED = sorted((REPO / "models").glob("cifar10-*.onnx"))


@pytest.fixture(scope="module")
def model() -> str:
    assert len(BUNDLED) == 1, f"expected one bundled CIFAR-10 model, found {[p.name for p in BUNDLED]}"
    return BUNDLED[0].stem


def ask(client, model: str, path: Path) -> dict:
    kind = "image/jpeg" if path.suffix == ".jpg" else "image/png"
    response = client.post(f"/predict?model={model}", files={"file": (path.name, path.read_bytes(), kind)})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    return prediction


def test_a_photo_of_a_cat_is_a_cat_in_distribution(client, model):
    p = ask(client, model, EXAMPLES / "cat.jpg")
    assert p["label"] == "cat" and not p["is_ood"], p
    assert p["ood_score"] <= p["threshold"] and p["p_value"] > 0.05


@pytest.mark.parametrize("name", ["digit-7.png", "coffee.jpg", "text-page.png"])
def test_a_digit_a_coffee_cup_and_a_page_of_text_are_rejected(client, model, name):
    p = ask(client, model, EXAMPLES / name)
    # rejected at the stored threshold, which keeps 95 % of in-distribution images: p-value below 0.05
    assert p["is_ood"] and p["ood_score"] > p["threshold"] and p["p_value"] < 0.05, p
