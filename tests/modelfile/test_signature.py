"""The graph's signature is declared once (``modelfile.signature``): docs/model-format.md's graph table says the
same, a file that breaks it is refused with the tensor named, and the one metadata writer leaves the graph alone."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelfile import InvalidModelFile, ModelMetadata, read_metadata, signature, write_metadata
from modelfile.propsfile import with_metadata

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "model-format.md"
DIGITS = REPO / "models" / "mnist-acet-lenet.onnx"
SIZES = {"channels": 1, "height": 28, "width": 28, "classes": 10}
DIMS = {"N": "batch", "C": "channels", "H": "height", "W": "width", "K": "classes"}


def graph_table() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """name -> (input/output, dtype, named dimensions), from the table under '## The graph'."""
    section = DOC.read_text().split("## The graph", 1)[1].split("\n\n**", 1)[0]
    rows = {}
    for kind, name, shape in re.findall(r"^\| (input|output) \| `(\w+)` \| (float32 `\[[^\]]*\]`)", section, re.M):
        dtype, dims = shape.split(" ", 1)
        rows[name] = (kind, dtype, tuple(DIMS[d.strip()] for d in dims.strip("`[]").split(",")))
    return rows


def test_the_documented_graph_is_the_declared_signature():
    declared = {signature.IMAGES.name: ("input", signature.IMAGES.dtype, signature.IMAGES.dims)}
    declared |= {t.name: ("output", t.dtype, t.dims) for t in signature.OUTPUTS}
    assert graph_table() == declared


@pytest.mark.parametrize(
    ("inputs", "outputs", "complaint"),
    [
        ([("pixels", "tensor(float)", ["N", 1, 28, 28])], {}, "graph inputs must be exactly ['images']"),
        ([("images", "tensor(double)", ["N", 1, 28, 28])], {}, "expected tensor(float)"),
        ([("images", "tensor(float)", ["N", 3, 28, 28])], {}, "input 'images' has shape ['N', 3, 28, 28]"),
        ([("images", "tensor(float)", ["N", 1, 28, 28])], {"probabilities": ["N", 7]}, "it lists 10 classes"),
    ],
    ids=["input-name", "input-type", "input-shape", "classes"],
)
def test_a_graph_off_the_signature_is_refused_naming_the_tensor(inputs, outputs, complaint):
    all_outputs = {"probabilities": ["N", 10], "ood_score": ["N"], "logits": ["N", 10]} | outputs
    with pytest.raises(InvalidModelFile, match=re.escape(complaint)):
        signature.check_graph(inputs, all_outputs, SIZES)


def test_a_run_with_the_wrong_shapes_is_refused():
    good = {"probabilities": np.zeros((4, 10), np.float32), "ood_score": np.zeros(4, np.float32)}
    signature.check_run(good, {**SIZES, "batch": 4})
    with pytest.raises(InvalidModelFile, match=r"'ood_score' has shape \(4, 1\) for a batch of 4; expected \(4,\)"):
        signature.check_run({**good, "ood_score": np.zeros((4, 1), np.float32)}, {**SIZES, "batch": 4})


def test_the_metadata_writer_changes_the_metadata_and_description_only(tmp_path):
    meta = read_metadata(DIGITS)
    renamed = ModelMetadata.model_validate({**meta.model_dump(), "name": "renamed"})
    copy = tmp_path / "m.onnx"
    copy.write_bytes(DIGITS.read_bytes())
    write_metadata(copy, renamed)
    before, after = onnx.load(str(DIGITS)), onnx.load(str(copy))
    assert read_metadata(copy).name == "renamed"
    assert after.doc_string.startswith("oodserve model renamed v")
    assert after.graph.SerializeToString() == before.graph.SerializeToString()
    assert [p.key for p in after.metadata_props] == [p.key for p in before.metadata_props]
    # writing twice leaves one entry and one description
    assert with_metadata(copy.read_bytes(), renamed) == copy.read_bytes()


def test_a_bare_graph_gets_its_first_metadata(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    bare = tmp_path / "bare.onnx"
    onnx.save(
        helper.make_model(
            helper.make_graph(
                [helper.make_node("Identity", ["x"], ["y"])],
                "g",
                [x],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
            )
        ),
        str(bare),
    )
    write_metadata(bare, read_metadata(DIGITS))
    assert onnx.load(str(bare)).metadata_props[0].key == "oodserve"
