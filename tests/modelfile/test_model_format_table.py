"""docs/model-format.md's field table and ``ModelMetadata`` change together: every field of the schema (nested
records flattened as ``calibration.threshold``) has a row, and every row is a field. The new fields round-trip."""

from __future__ import annotations

import json
import re
import types
import typing

import pytest
from pydantic import BaseModel
from servers import REPO
from stand_in import metadata

from modelfile import InvalidModelFile, ModelMetadata, Recalibration

DOC = REPO / "docs" / "model-format.md"


def schema_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    fields = set()
    for name, info in model.model_fields.items():
        # a record or an optional record is flattened; a map of records (evaluation.ood) is one row
        optional = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
        nested = [t for t in (info.annotation, *(typing.get_args(info.annotation) if optional else ()))
                  if isinstance(t, type) and issubclass(t, BaseModel)]
        fields |= schema_fields(nested[0], f"{prefix}{name}.") if nested else {prefix + name}
    return fields


def table_fields() -> set[str]:
    section = DOC.read_text().split("## The metadata", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for cell in rows for name in re.findall(r"`([^`]+)`", cell)}


def test_the_field_table_lists_exactly_the_schemas_fields():
    assert table_fields() == schema_fields(ModelMetadata)


def test_precision_provenance_and_recalibration_round_trip():
    record = Recalibration(folder="site-b", images=1000, held_out=300, seed=0, previous_threshold=0.1,
                           held_out_reject_rate_before=0.12, held_out_reject_rate_after=0.05, created="2026-01-01")
    meta = metadata("m").model_copy(update={"precision": "int8", "quantized_from": "run/last.pt",
                                            "recalibration": record})
    again = ModelMetadata.from_json(meta.to_json())
    assert again == meta and again.recalibration.folder == "site-b" and again.precision == "int8"
    assert ModelMetadata.from_json(metadata("m").to_json()).precision == "fp32"  # files from before the field


@pytest.mark.parametrize(("update", "field"), [
    ({"precision": "int4"}, "precision"),
    ({"quantized_from": "/home/me/runs/x/last.pt"}, "quantized_from"),
    ({"quantized_from": "x/last.pt"}, "quantized_from is set but precision is 'fp32'"),
    ({"recalibration": {"folder": "/data/site-b", "images": 10, "held_out": 3, "seed": 0, "previous_threshold": 0.1,
                        "held_out_reject_rate_before": 0.1, "held_out_reject_rate_after": 0.05}},
     "recalibration.folder"),
])
def test_bad_new_fields_are_refused_naming_them(update, field):
    with pytest.raises(InvalidModelFile, match=re.escape(field)):
        ModelMetadata.from_json(json.dumps({**metadata("m").model_dump(), **update}))
