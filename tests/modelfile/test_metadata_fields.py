"""The metadata's precision, provenance and recalibration fields round-trip and refuse bad values by name
(the field table of docs/model-format.md is checked by test_model_format_doc.py)."""

from __future__ import annotations

import json
import re

import pytest
from stand_in import metadata

from modelfile import InvalidModelFile, ModelMetadata, Recalibration


def test_precision_provenance_and_recalibration_round_trip():
    record = Recalibration(
        folder="site-b",
        images=1000,
        held_out=300,
        seed=0,
        previous_threshold=0.1,
        held_out_reject_rate_before=0.12,
        held_out_reject_rate_after=0.05,
        created="2026-01-01",
    )
    meta = metadata("m").model_copy(
        update={"precision": "int8", "quantized_from": "run/last.pt", "recalibration": record}
    )
    again = ModelMetadata.from_json(meta.to_json())
    assert again == meta and again.recalibration.folder == "site-b" and again.precision == "int8"
    assert ModelMetadata.from_json(metadata("m").to_json()).precision == "fp32"  # files from before the field


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"precision": "int4"}, "precision"),
        ({"quantized_from": "/home/me/runs/x/last.pt"}, "quantized_from"),
        ({"quantized_from": "x/last.pt"}, "quantized_from is set but precision is 'fp32'"),
        (
            {
                "recalibration": {
                    "folder": "/data/site-b",
                    "images": 10,
                    "held_out": 3,
                    "seed": 0,
                    "previous_threshold": 0.1,
                    "held_out_reject_rate_before": 0.1,
                    "held_out_reject_rate_after": 0.05,
                }
            },
            "recalibration.folder",
        ),
    ],
)
def test_bad_new_fields_are_refused_naming_them(update, field):
    with pytest.raises(InvalidModelFile, match=re.escape(field)):
        ModelMetadata.from_json(json.dumps({**metadata("m").model_dump(), **update}))
