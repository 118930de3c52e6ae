"""Open Inference Protocol v2: the stock tritonclient works against the service, and malformed
tensors get ``{"error": ...}`` 4xx answers."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from hostile_images import DIGITS
from samples import digit_png, spread_digits
from servers import DEFAULT_MODEL, RGB_MODEL
from tritonclient.utils import InferenceServerException

from modelfile import InputSpec
from service.pipeline.imaging import DecodeLimits, load_image

MNIST_INPUT = InputSpec(channels=1, height=28, width=28, color_mode="L", resize="stretch")


@pytest.fixture
def triton_client(server):
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield client
    client.close()


def digits_tensor(n: int) -> tuple[np.ndarray, list[bytes]]:
    pngs = [digit_png(i)[0] for i in spread_digits(n)]
    return np.stack([load_image(p, MNIST_INPUT, DecodeLimits(10**6)) for p in pngs]), pngs


def test_health_and_metadata_through_tritonclient(triton_client):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(DEFAULT_MODEL)
    assert not triton_client.is_model_ready("no-such-model")
    server = triton_client.get_server_metadata()
    assert server["name"] == "oodserve" and "binary_tensor_data" in server["extensions"]
    model = triton_client.get_model_metadata(DEFAULT_MODEL)
    assert model["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert [(o["name"], o["datatype"]) for o in model["outputs"]] == [
        ("probabilities", "FP32"),
        ("ood_score", "FP32"),
        ("is_ood", "BOOL"),
    ]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_tritonclient_infer_matches_predict(triton_client, client, binary):
    images, pngs = digits_tensor(4)
    tensor = triton.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "ood_score", "is_ood")]
    result = triton_client.infer(DEFAULT_MODEL, [tensor], outputs=outputs, request_id="req-1")
    assert result.get_response()["id"] == "req-1"
    probabilities, scores, is_ood = (result.as_numpy(n) for n in ("probabilities", "ood_score", "is_ood"))
    assert probabilities.shape == (4, 10) and scores.shape == (4,) and is_ood.dtype == np.bool_

    files = [("files", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    predictions = client.post("/predict", files=files).json()["predictions"]
    for i, p in enumerate(predictions):
        assert p["class_index"] == int(np.argmax(probabilities[i]))
        assert p["ood_score"] == pytest.approx(float(scores[i]), abs=1e-6)
        assert p["is_ood"] == bool(is_ood[i])


def test_tritonclient_default_outputs_come_back_binary(triton_client, client):
    images, _ = digits_tensor(2)
    tensor = triton.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    result = triton_client.infer(DEFAULT_MODEL, [tensor])  # asks for binary_data_output
    response = result.get_response()
    assert {o["name"] for o in response["outputs"]} == {"probabilities", "ood_score", "is_ood"}
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    # The same numbers as the JSON answer to the same tensor.
    as_json = {
        o["name"]: o
        for o in infer_json(client, request(shape=(2, 1, 28, 28), data=images.ravel().tolist())).json()["outputs"]
    }
    np.testing.assert_allclose(result.as_numpy("probabilities").ravel(), as_json["probabilities"]["data"], atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("ood_score"), as_json["ood_score"]["data"], atol=1e-6)
    assert result.as_numpy("is_ood").tolist() == as_json["is_ood"]["data"]


def test_known_digits_get_their_labels_and_in_distribution_verdicts(triton_client):
    indices = list(DIGITS)
    images = np.stack([load_image(digit_png(i)[0], MNIST_INPUT, DecodeLimits(10**6)) for i in indices])
    tensor = triton.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    result = triton_client.infer(DEFAULT_MODEL, [tensor])
    assert result.as_numpy("probabilities").argmax(axis=1).tolist() == [DIGITS[i] for i in indices]
    assert not result.as_numpy("is_ood").any()


def test_tritonclient_sees_errors_as_exceptions(triton_client):
    tensor = triton.InferInput("images", [1, 3, 28, 28], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 28, 28), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"takes \[N, 1, 28, 28\]"):
        triton_client.infer(DEFAULT_MODEL, [tensor])


def test_versioned_routes(client):
    version = client.get(f"/v2/models/{DEFAULT_MODEL}").json()["versions"][0]
    assert client.get(f"/v2/models/{DEFAULT_MODEL}/versions/{version}/ready").json()["ready"] is True
    response = client.get(f"/v2/models/{DEFAULT_MODEL}/versions/nope")
    assert response.status_code == 404 and "no version 'nope'" in response.json()["error"]


# --- malformed requests ---------------------------------------------------------------------------


def request(shape=(1, 1, 28, 28), datatype="FP32", data=None, name="images", **extra) -> dict:
    data = np.full(int(np.prod(shape)), 0.5).tolist() if data is None else data
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}], **extra}


def infer_json(client: httpx.Client, body, model=DEFAULT_MODEL, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"/v2/models/{model}/infer", content=content, **kwargs)


def assert_v2_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], body["error"]


def threshold(client: httpx.Client, model: str = DEFAULT_MODEL) -> float:
    return client.get(f"/models/{model}").json()["threshold"]


def test_json_request_and_response(client):
    response = infer_json(client, request(shape=(2, 1, 28, 28), id="json-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == DEFAULT_MODEL and body["id"] == "json-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [2, 10] and len(outputs["probabilities"]["data"]) == 20
    assert outputs["is_ood"]["datatype"] == "BOOL" and all(isinstance(v, bool) for v in outputs["is_ood"]["data"])
    probabilities = np.reshape(outputs["probabilities"]["data"], (2, 10))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Two identical grey images: identical answers, and the verdict is the threshold's.
    np.testing.assert_allclose(probabilities[0], probabilities[1])
    scores = outputs["ood_score"]["data"]
    assert outputs["is_ood"]["data"] == [s > threshold(client) for s in scores]


def test_nested_data_is_answered_like_flat_data(client):
    nested = infer_json(client, request(data=np.full((1, 1, 28, 28), 0.25).tolist()))
    flat = infer_json(client, request(data=[0.25] * 784))
    assert nested.status_code == 200, nested.text
    assert nested.json()["outputs"] == flat.json()["outputs"]


def test_a_client_timeout_that_expires_says_so(client):
    response = infer_json(client, request(parameters={"timeout": 1}))  # Triton's timeout: microseconds
    assert_v2_error(response, 504, "own timeout", "parameters.timeout = 1 µs")
    assert "overloaded" not in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (request(shape=(1, 1, 32, 32)), ["shape [1, 1, 32, 32]", "[N, 1, 28, 28]"]),
        (request(shape=(1, 28, 28)), ["shape [1, 28, 28]"]),
        (request(shape=(0, 1, 28, 28), data=[]), ["1 <= N <="]),
        (request(shape=(33, 1, 28, 28), data=[0.5]), ["1 <= N <= 32"]),
        (request(datatype="INT32"), ["FP32", "'INT32'"]),
        (request(data=[0.5] * 700), ["700 elements", "needs 784"]),
        (request(data=["a"] * 784), ["must hold numbers"]),
        (request(data=[[0.5, 0.5], [0.5]]), ["not a regular array"]),
        (request(data=[2.0] * 784), ["[0, 1]"]),
        (request(name="pixels"), ["exactly one input 'images'", "'pixels'"]),
        (request(outputs=[{"name": "logits"}]), ["unknown output", "'logits'"]),
        ({"inputs": "nope"}, ["not an inference request", "inputs"]),
        ({"inputs": [{"name": "images"}]}, ["not an inference request", "shape", "datatype"]),
        ([1, 2, 3], ["not an inference request"]),
        (b"{not json", ["not valid JSON"]),
        (b"", ["empty"]),
    ],
    ids=[
        "wrong-size",
        "wrong-rank",
        "empty-batch",
        "batch-too-big",
        "datatype",
        "length",
        "strings",
        "ragged",
        "out-of-range",
        "input-name",
        "output-name",
        "inputs-type",
        "missing-fields",
        "not-object",
        "not-json",
        "empty-body",
    ],
)
def test_malformed_tensors(client, body, words):
    assert_v2_error(infer_json(client, body), 400, *words)


def test_nan_values_are_refused(client):
    text = json.dumps(request()).replace("0.5", "NaN", 1).encode()  # Python's json reads NaN
    assert_v2_error(infer_json(client, text), 400, "1 value(s) that are NaN or infinite", "finite values")


@pytest.mark.parametrize(
    ("declared", "payload", "header", "words"),
    [
        (784 * 4, 784 * 4 - 8, None, ["carries 3128 bytes", "declare 3136"]),
        (100, 100, None, ["binary_data_size is 100", "takes 3136"]),
        (784 * 4, 784 * 4, "99999", ["Inference-Header-Content-Length is '99999'"]),
        (784 * 4, 784 * 4, "abc", ["'abc'"]),
    ],
    ids=["short-payload", "wrong-declared-size", "header-too-long", "header-not-a-number"],
)
def test_malformed_binary_tensors(client, declared, payload, header, words):
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": [1, 1, 28, 28],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    ).encode()
    body = head + np.full(payload // 4, 0.5, dtype="<f4").tobytes()
    headers = {"Inference-Header-Content-Length": header or str(len(head))}
    assert_v2_error(infer_json(client, body, headers=headers), 400, *words)


def test_unknown_model_and_not_found_shapes(client):
    assert_v2_error(infer_json(client, request(), model="nope"), 404, "unknown model 'nope'", DEFAULT_MODEL)
    assert_v2_error(client.get("/v2/models/nope/ready"), 404, "nope")


def test_rgb_model_takes_its_own_shape(client):
    response = infer_json(client, request(shape=(1, 3, 32, 24)), model=RGB_MODEL)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, 10] and outputs["ood_score"]["shape"] == [1]
    # The stand-in's score is 1 - max probability, and the verdict is its threshold's.
    [score] = outputs["ood_score"]["data"]
    assert score == pytest.approx(1 - max(outputs["probabilities"]["data"]), abs=1e-6)
    assert outputs["is_ood"]["data"] == [score > threshold(client, RGB_MODEL)]
