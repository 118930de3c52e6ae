"""Each install extra holds what its code imports: `pip install '.[train]'` (docker/Dockerfile.train) can
train *and* export (the exporter runs the file it wrote in onnxruntime), `.[serve]` can serve. Checked by
reading every import, lazy ones included, against pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OWN = {"training", "service", "modelfile"}


def third_party_imports(folders: list[str]) -> set[str]:
    found = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    found.add((node.module or "").split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in OWN}


def declared(extra: str) -> set[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    return {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


@pytest.mark.parametrize(
    ("extra", "folders"),
    [("train", ["training", "modelfile"]), ("serve", ["service", "modelfile"]), ("gpu", ["service", "modelfile"])],
)
def test_every_imported_package_is_in_the_extra(extra, folders):
    distributions = importlib.metadata.packages_distributions()
    have = declared(extra) | ({"onnxruntime"} if extra == "gpu" else set())  # onnxruntime-gpu provides it
    if extra == "train":  # training.nets.pretrained imports the `pretrained` extra when EfficientNet-Lite0 is asked for
        have |= declared("pretrained")
    missing = {
        m: distributions.get(m)
        for m in third_party_imports(folders)
        if not {d.lower().replace("_", "-") for d in distributions.get(m, [m])} & have
    }
    assert not missing, f"imported by {folders} but not in the {extra!r} extra: {missing}"


def test_the_serving_extras_hold_no_torch():
    for extra in ("serve", "gpu"):
        assert not declared(extra) & {"torch", "torchvision"}
