"""``python -m training.posthoc``: any classifier -> an oodserve file with a fitted OOD score and a threshold.

    # an oodserve file (its own score stays a candidate) plus EfficientNet-Lite0 features
    python -m training.posthoc models/cifar10-acet-oe-fastnet.onnx --images cifar10 --data-root ../shared/data \\
        --pretrained efficientnet-lite0 --outliers wallpapers.zip#gnome-backgrounds --out photo-v3.onnx

    # someone else's ONNX classifier: its input convention on the command line
    python -m training.posthoc their.onnx --images photos/ --classes classes.txt --size 224 \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --score energy --out theirs-oodserve.onnx

    # an oodserve training checkpoint, or a torchvision classifier's weights file: exported first, then as above
    python -m training.posthoc --checkpoint runs/plain/last.pt --images cifar10 --out plain-knn.onnx --score knn
    python -m training.posthoc --torchvision resnet18=mine.pth --size 224 --images photos/ --classes classes.txt \
        --out mine.onnx

Refusals are one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import onnx
import torch

from modelfile import ClassifierInput, FeatureSource, InputSpec, InvalidModelFile, metadata_from_props
from modelfile.imagefolder import RefusedImages

from ..data import datasets
from ..export.exporter import RESIZE_MODES, export_checkpoint
from ..nets import pretrained
from ..run import checkpoint
from . import card, choice, graph, images, parts, sources, wrap
from .scores import SCORES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.posthoc",
        description="Wrap a classifier into an oodserve model file: a post-hoc OOD score fitted on in-distribution "
        "images, compiled into the graph, its threshold calibrated on images the fit never saw.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("classifier", nargs="?", type=Path, help="the classifier's ONNX file (or use --checkpoint)")
    p.add_argument("--checkpoint", type=Path, help="an oodserve training checkpoint, exported first")
    p.add_argument(
        "--torchvision",
        metavar="NAME=WEIGHTS",
        help="a torchvision classifier from its weights file (a state_dict; e.g. fine-tuned on your classes), "
        "exported first at --size; --mean/--std default to ImageNet's",
    )
    p.add_argument("--out", type=Path, required=True, help="the model file to write")
    p.add_argument("--images", required=True, help="in-distribution images: a folder DIR/<class>/* or a data set name")
    p.add_argument("--data-root", default="data", help="where named data sets and relative --outliers live")
    g = p.add_argument_group("the classifier's input (not needed for an oodserve file)")
    g.add_argument("--classes", type=Path, help="a text file, one class name per line, in logit order")
    g.add_argument("--size", help="input size, H or HxW (default: the graph's, where it is fixed)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=3)
    g.add_argument("--resize", choices=RESIZE_MODES, default="stretch", help="how the service resizes uploads")
    g.add_argument("--mean", default="0", help="per-channel mean the classifier subtracts, in its pixel units")
    g.add_argument("--std", default="1", help="per-channel std it divides by, in its pixel units")
    g.add_argument("--pixel-range", choices=("0-1", "0-255"), default="0-1", help="the pixel units it was trained on")
    g.add_argument("--channel-order", choices=("RGB", "BGR"), default="RGB")
    g.add_argument("--logits", help="the logits output's name (default: `logits`, or the only 2-D output)")
    g.add_argument("--features", help="the feature tensor (default: the input of the last linear layer)")
    s = p.add_argument_group("the score")
    s.add_argument(
        "--score",
        default="auto",
        help=f"auto, or SCORE[@SOURCE][+...] with SCORE in {', '.join(SCORES)}; SOURCE: own features "
        "(default), or a --pretrained network; several joined by + are combined by Fisher's method",
    )
    s.add_argument(
        "--pretrained",
        action="append",
        default=[],
        metavar="NAME[=WEIGHTS]",
        help=f"a feature network run on the same image: {', '.join(pretrained.NAMES)}",
    )
    s.add_argument("--pretrained-size", type=int, help="the size the feature network runs at (default: its own)")
    s.add_argument(
        "--outliers",
        action="append",
        default=[],
        metavar="DIR|ZIP[#GROUP+...]",
        help="images that are not in-distribution, for --score auto (with the procedural noise families)",
    )
    s.add_argument(
        "--evaluate",
        default="uniform,permuted",
        help="comma-separated OOD sets the card reports (training.evaluation.ood_sets names)",
    )
    s.add_argument("--tpr", type=float, default=0.95, help="share of in-distribution images the threshold keeps")
    s.add_argument("--quantize", choices=("int8",), help="quantize the classifier and feature networks first")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--name", help="model name (default: the output file's stem)")
    s.add_argument("--version", default="1")
    return p


def _floats(text: str, channels: int, flag: str) -> list[float]:
    values = [float(v) for v in text.split(",")]
    if len(values) == 1:
        values *= channels
    if len(values) != channels:
        raise ValueError(f"{flag} has {len(values)} values; the classifier takes {channels} channels")
    return values


def _input_spec(args, model: onnx.ModelProto) -> InputSpec:
    """The oodserve file's own input, else --size/--channels, else the graph's fixed input shape."""
    props = {p.key: p.value for p in model.metadata_props}
    if "oodserve" in props and args.size is None:
        return metadata_from_props(props).input
    if args.size is None:
        clf_input = graph.classifier(model, logits=args.logits, features=args.features).input_shape
        if not all(isinstance(d, int) and d > 0 for d in clf_input[1:]):
            raise ValueError(f"the classifier's input shape is {clf_input}: give its size with --size H[xW]")
        args.channels, h, w = clf_input[1:]
    else:
        h, _, w = args.size.partition("x")
        h, w = int(h), int(w or h)
    return InputSpec(
        channels=args.channels, height=h, width=w, color_mode="L" if args.channels == 1 else "RGB", resize=args.resize
    )


def _classes(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise ValueError(f"--classes {path.name}: no such file")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _branches(args, shape) -> list[sources.Branch]:
    out = []
    for item in args.pretrained:
        name, _, weights = item.partition("=")
        module, spec = pretrained.load(name, weights or None, args.pretrained_size)
        source = FeatureSource(name=spec.name, dim=spec.feature_dim, input_size=spec.input_size, weights=spec.weights)
        out.append(sources.branch(module, source, shape))
    return out


def request(args, classifier: Path) -> wrap.Request:
    model = onnx.load(str(classifier))
    spec = _input_spec(args, model)
    channels = spec.channels
    if args.score != "auto":
        choice.Candidate.parse(args.score)  # refuse a misspelt score before any image is read
    return wrap.Request(
        classifier=classifier,
        out=args.out,
        images=args.images,
        input=spec,
        classes=_classes(args.classes),
        classifier_input=ClassifierInput(
            pixel_range=args.pixel_range,
            channel_order=args.channel_order,
            mean=_floats(args.mean, channels, "--mean"),
            std=_floats(args.std, channels, "--std"),
        ),
        logits=args.logits,
        features=args.features,
        pretrained=_branches(args, (channels, spec.height, spec.width)),
        score=args.score,
        outliers=args.outliers,
        evaluate=[s for s in args.evaluate.split(",") if s],
        tpr=args.tpr,
        seed=args.seed,
        data_root=args.data_root,
        name=args.name,
        version=args.version,
        precision=args.quantize or "fp32",
    )


REFUSED = (
    ValueError,
    graph.NotAClassifier,
    images.TooFewImages,
    RefusedImages,
    pretrained.WeightsMissing,
    datasets.DatasetUnavailable,
    checkpoint.UnreadableCheckpoint,
    InvalidModelFile,
    FileNotFoundError,
)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if sum(x is not None for x in (args.classifier, args.checkpoint, args.torchvision)) != 1:
        print("error: give one of a classifier file, --checkpoint or --torchvision", file=sys.stderr)
        return 2
    t = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            classifier = args.classifier
            if args.checkpoint is not None:
                classifier = Path(tmp) / (args.checkpoint.parent.name + ".onnx")
                export_checkpoint(args.checkpoint, classifier, data_root=args.data_root, seed=args.seed)
            elif args.torchvision is not None:
                classifier = _export_torchvision(args, Path(tmp))
            elif not classifier.is_file():
                raise ValueError(f"{classifier.name}: no such file")
            result = wrap.wrap(request(args, classifier))
    except REFUSED as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t
    command = "python -m training.posthoc " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.out.with_suffix(".md").write_text(card.markdown(result.meta, command, seconds))
    print(summary(result, args.out, seconds))
    return 0


def _export_torchvision(args, tmp: Path) -> Path:
    """The network exported as it is (its input: normalised pixels at --size), then wrapped like any ONNX file."""
    name, _, weights = args.torchvision.partition("=")
    if not weights:
        raise ValueError(f"--torchvision {name}: give its weights file as NAME=FILE")
    if args.size is None:
        raise ValueError("--torchvision needs --size (the size the classifier was trained at)")
    h, _, w = args.size.partition("x")
    net = pretrained.classifier(name, weights)
    if (args.mean, args.std) == ("0", "1"):
        args.mean, args.std = ",".join(map(str, pretrained.IMAGENET_MEAN)), ",".join(map(str, pretrained.IMAGENET_STD))
    out = tmp / f"{Path(weights).stem}.onnx"
    example = (torch.rand(2, 3, int(h), int(w or h)),)
    onnx.save(parts.to_onnx(net, example, ["input"], ["logits"]), str(out))
    return out


def summary(result: wrap.Result, out: Path, seconds: float) -> str:
    m, ph = result.meta, result.meta.posthoc
    lines = []
    if result.choice:
        lines.append(f"auto: mean AUROC against {ph.choice_set} (calibration part as in-distribution):")
        lines += [f"  {label:<34} {auroc:.4f}" for label, auroc in result.choice.items()]
    lines.append(f"score: {m.score}")
    lines.append(
        f"threshold {m.calibration.threshold:.6g} at TPR {m.calibration.tpr} on {m.calibration.n} images; held-out "
        f"reject rate {result.held_out_reject_rate:.2%} of {ph.held_out_images} images "
        f"(target {1 - m.calibration.tpr:.2%})"
    )
    ev = m.evaluation
    if ev.test_accuracy is not None:
        lines.append(f"{ev.test_split}: accuracy {ev.test_accuracy:.4f}, rejected {ev.id_reject_rate:.2%}")
    lines += [f"  {name:<28} AUROC {r.auroc:.4f}  accepted {r.accepted:.2%}" for name, r in ev.ood.items()]
    lines.append(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and its card {out.with_suffix('.md').name} in {seconds:.0f} s"
    )
    return "\n".join(lines)
