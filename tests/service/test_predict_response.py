"""``/predict``'s answer is serialised once (orjson) without the response model: it must still be exactly
what ``PredictResponse`` documents, field for field, for one image, several, ``top_k`` and a raw body."""

from __future__ import annotations

import pytest
from samples import digit_png, spread_digits

from service.http.schemas import PredictResponse


def _documented(body: dict) -> PredictResponse:
    """The body read as the documented model; it must round-trip to the very same JSON."""
    model = PredictResponse.model_validate(body, strict=True)
    assert model.model_dump(mode="json") == body
    return model


@pytest.mark.parametrize("top_k", [None, 1, 3])
def test_the_answer_is_the_documented_model(client, top_k):
    files = [("files", (f"{i}.png", digit_png(i)[0], "image/png")) for i in spread_digits(3)]
    params = {} if top_k is None else {"top_k": top_k}
    response = client.post("/predict", files=files, params=params)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    answer = _documented(response.json())
    assert len(answer.predictions) == 3
    for p in answer.predictions:
        shown = list(p.probabilities.values())
        assert len(shown) == (10 if top_k is None else top_k)
        if top_k is not None:
            assert shown == sorted(shown, reverse=True) and next(iter(p.probabilities)) == p.label
        assert p.confidence == max(shown) and p.is_ood == (p.ood_score > p.threshold)


def test_a_raw_body_has_no_filename(client):
    response = client.post("/predict", content=digit_png(0)[0], headers={"content-type": "image/png"})
    assert response.status_code == 200
    [p] = _documented(response.json()).predictions
    assert p.filename is None
