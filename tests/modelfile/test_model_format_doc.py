"""docs/model-format.md's metadata field table is the schema, row for row: every field of
``modelfile.ModelMetadata`` (nested ones dotted) is documented, and nothing documented is gone."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from modelfile import ModelMetadata, OODResult

DOC = Path(__file__).resolve().parents[2] / "docs" / "model-format.md"


def documented(text: str | None = None) -> dict[str, str]:
    """field name -> the row's type column, from the table under '## The metadata'."""
    section = (text or DOC.read_text()).split("## The metadata", 1)[1]
    table = section.split("| field | type | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        first, kind = (c.strip() for c in line.strip("|").split("|")[:2])
        rows |= {name: kind for name in re.findall(r"`([a-z_.]+)`", first)}
    return rows


def model_class(annotation) -> type[BaseModel] | None:
    """The pydantic model a field holds (``X`` or ``X | None``), else None."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def schema_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        nested = model_class(field.annotation)
        names |= schema_fields(nested, f"{prefix}{name}.") if nested else {prefix + name}
    return names


def test_the_field_table_lists_every_schema_field_and_no_other():
    doc = set(documented())
    schema = schema_fields(ModelMetadata)
    assert not schema - doc, f"in the schema, not in docs/model-format.md: {sorted(schema - doc)}"
    assert not doc - schema, f"in docs/model-format.md, not in the schema: {sorted(doc - schema)}"


def test_the_ood_result_keys_are_the_schemas():
    keys = re.search(r"\{([a-z0-9_, ]+)\}", documented()["evaluation.ood"]).group(1)
    assert {k.strip() for k in keys.split(",")} == set(OODResult.model_fields)


def test_a_renamed_row_is_noticed():
    rows = documented(DOC.read_text().replace("`calibration.tpr`", "`calibration.keep`"))
    assert "calibration.keep" in rows and "calibration.tpr" not in rows
