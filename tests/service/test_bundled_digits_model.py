"""The service's default model on images it never trained on: held-out MNIST test digits
(tests/data/mnist-t10k-heldout, t10k indices 5000-9999) and real photos."""

from __future__ import annotations

from pathlib import Path

from samples import encode, photo

HELD_OUT = Path(__file__).resolve().parents[1] / "data" / "mnist-t10k-heldout"


def ask(client, data: bytes, name: str, kind: str) -> dict:
    response = client.post("/predict", files={"file": (name, data, kind)})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "mnist-acet-lenet"  # no model named: the default answers
    return response.json()["predictions"][0]


def test_a_held_out_handwritten_seven_is_a_seven_in_distribution(client):
    sevens = sorted(HELD_OUT.glob("*-label7.png"))
    assert len(sevens) == 5
    for path in sevens:
        p = ask(client, path.read_bytes(), path.name, "image/png")
        assert p["label"] == "7" and not p["is_ood"], (path.name, p)


def test_held_out_digits_are_recognised(client):
    paths = sorted(HELD_OUT.glob("*.png"))
    answers = [(ask(client, p.read_bytes(), p.name, "image/png"), p.stem[-1]) for p in paths]
    assert sum(a["label"] == label for a, label in answers) >= len(paths) - 1
    assert sum(not a["is_ood"] for a, _ in answers) >= len(paths) - 3


def test_a_photo_of_a_cat_is_out_of_distribution(client):
    p = ask(client, encode(photo("chelsea"), "JPEG"), "chelsea.jpg", "image/jpeg")
    assert p["is_ood"] is True and p["ood_score"] > p["threshold"]
