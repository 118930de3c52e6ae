"""``training.posthoc.graph`` on the bundled photo file: its logits, its features (behind float16-stored weights)
and their head found from the graph's structure; the float16 weights stored as float32 for the quantizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from training.evaluation.ood_sets import InputShape, photo_crops
from training.posthoc import graph

PHOTO = Path(__file__).resolve().parents[3] / "models" / "cifar10-acet-oe-fastnet.onnx"


def test_the_bundled_files_features_and_head_are_found():
    model = onnx.load(str(PHOTO))
    clf = graph.classifier(model)
    assert (clf.input, clf.logits, clf.own_score) == ("images", "logits", "ood_score")
    w, b = clf.head
    assert w.shape[0] == 10 and b.shape == (10,)
    x = photo_crops(InputShape(3, 32, 32), 8, seed=0).numpy()
    features = onnx.helper.make_tensor_value_info(clf.features, onnx.TensorProto.FLOAT, None)
    model.graph.output.append(features)
    f, logits = ort.InferenceSession(model.SerializeToString()).run([clf.features, "logits"], {"images": x})
    assert np.allclose(f @ w.T + b, logits, atol=1e-4)  # the head as read equals the graph's last layer


def test_float16_weights_come_back_as_float32_with_the_same_outputs():
    model = onnx.load(str(PHOTO))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    widened = graph.float32_weights(model)
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in widened.graph.initializer)
    x = photo_crops(InputShape(3, 32, 32), 8, seed=0).numpy()
    before, after = (ort.InferenceSession(m.SerializeToString()).run(None, {"images": x}) for m in (model, widened))
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a, b)
