"""``python -m training.export``: checkpoint -> one self-describing ONNX file, calibrated.

The graph returns ``probabilities``, ``ood_score`` and ``logits`` for ``images`` in [0, 1]; the
method's score is computed inside the graph, so the service needs no method-specific code. The
reject threshold is set on the held-out validation split (never the test set) by running the
*exported* file through onnxruntime, so what is calibrated is exactly what is served. The schema of
the metadata is ``modelfile`` (documented in ``docs/model-format.md``).

    python -m training.export --checkpoint runs/acet/last.pt --out models/my-model.onnx
    python -m training.export --check models/my-model.onnx
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import sys
import time
import typing
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import nn

from modelfile import (
    ID_ROW,
    INPUT_NAME,
    OUTPUT_NAMES,
    Calibration,
    Evaluation,
    InputSpec,
    InvalidModelFile,
    ModelMetadata,
    OODResult,
    ScoreHistograms,
    open_session,
    read_metadata,
    write_metadata,
)

from ..data import datasets, stream
from ..evaluation import ood_metrics, ood_sets, score_choice
from ..evaluation.scorers import session_outputs
from ..run import checkpoint
from . import domain_guard
from .quantize import CALIBRATION_IMAGES, PRECISIONS, quantize_export


class Deployable(nn.Module):
    """The exported graph: images in [0, 1] -> (probabilities, ood_score, logits)."""

    def __init__(self, model: nn.Module, method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, images: torch.Tensor):
        return self.method.outputs(self.model, images)


class FlipAveraged(nn.Module):
    """Test-time augmentation inside the graph: the classifier's penultimate features averaged over each image and
    its mirror image, then its own head. For a linear head that is the average of the two logits; every method's
    outputs (softmax, score) are then computed from it as usual. Two passes of the network per image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.head = model, model.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.model.features(x) + self.model.features(x.flip(3)))

    def forward(self, x: torch.Tensor, **head_options) -> torch.Tensor:
        return self.head(self.features(x), **head_options)


TTA = {"none": None, "flip": FlipAveraged}


def to_onnx(model: nn.Module, method, info: datasets.DatasetInfo, path: Path) -> None:
    """Write the graph (no metadata yet) with a dynamic batch dimension, as one file, its score guarded
    against inputs outside [0, 1] (``training.export.domain_guard``)."""
    wrapper = Deployable(model, method).eval()
    example = torch.rand(2, info.channels, info.height, info.width)  # 2, not 1: a batch of 1 would specialise
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("N")}},
        dynamo=True,
        external_data=False,
        optimize=True,
        verbose=False,
    )
    domain_guard.add_to_file(path)


def round_weights_to_fp16(model: nn.Module) -> None:
    """Round parameters to the values fp16 storage will hold, so torch and the file agree exactly."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def store_weights_fp16(path: Path, min_elements: int = 1024) -> None:
    """Store large float32 initialisers as float16 plus a Cast: half the file, fp32 arithmetic kept.

    LeNet's fc1024 alone is 3.2 M weights (12.8 MB in fp32); the service loads the file once, the Cast
    runs once per session (onnxruntime folds constant Casts), so inference cost is unchanged.
    """
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) >= min_elements:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def quick_ood_sets(
    test_x: torch.Tensor, shape: ood_sets.InputShape, seed: int, n: int = 1000
) -> dict[str, torch.Tensor]:
    """OOD sets that need no download (``training.evaluation.ood_sets``): uniform noise and pixel-permuted test
    images."""
    n = min(n, len(test_x))
    return {name: ood_sets.noise_set(name, shape, test_x, n, seed) for name in ("uniform", "permuted")}


def export_checkpoint(
    checkpoint_path: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    version: str = "1",
    tpr: float = 0.95,
    resize: str = "stretch",
    data_root: str | None = None,
    ood: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    fp16_weights: bool = False,
    score: str | None = None,
    tta: str = "none",
    precision: str = "fp32",
) -> ModelMetadata:
    """Export, calibrate on the validation split, summarise on the test split, write metadata.

    ``score``: the OOD score the graph computes, for a method with several (``Method.score_options``);
    ``"auto"`` takes the one that best separates the validation split from training noise. ``tta``: ``flip``
    exports ``FlipAveraged`` (twice the network's cost per image; the architecture field says so). ``precision``
    ``int8``: the file is quantized (``training.export.quantize``) before it is calibrated and evaluated."""
    if precision != "fp32" and fp16_weights:
        raise ValueError(
            "--fp16-weights and --quantize int8 exclude each other (int8 weights are a quarter of float32's already)"
        )
    out = Path(out)
    ckpt = checkpoint.load(checkpoint_path)
    model, method, info = checkpoint.build_model(ckpt)
    model.eval()
    splits = checkpoint.data_splits(ckpt, data_root)
    if fp16_weights:
        round_weights_to_fp16(model)
    choice = score_choice.compare(model, method, splits.val.x, seed) if method.score_options else {}
    if score == "auto":
        score = max(choice, key=choice.get) if choice else None
    if score is not None:
        method = method.with_score(score)
    if TTA[tta] is not None:
        model = TTA[tta](model).eval()
    to_onnx(model, method, info, out)
    quantized = quantize_export(precision, out, training_images(splits.train, seed), seed, Path(checkpoint_path))
    if isinstance(splits.train, stream.Streamed):
        splits.train.close()
    if fp16_weights:
        store_weights_fp16(out)
    sess = open_session(out)

    calibration = Calibration.from_scores(session_outputs(sess, splits.val.x).ood_score, tpr)
    shape = ood_sets.InputShape(info.channels, info.height, info.width)
    evaluation = evaluate_on_test(
        sess, splits.test, calibration, {**quick_ood_sets(splits.test.x, shape, seed), **(ood or {})}
    )
    dataset = datasets.shown_name(info.name)  # the checkpoint's info names the data set by its path
    meta = ModelMetadata(
        name=name or out.stem,
        version=version,
        method=method.label,
        score=method.score,
        classes=list(info.classes),
        input=InputSpec(
            channels=info.channels, height=info.height, width=info.width, color_mode=info.color_mode, resize=resize
        ),
        dataset=dataset,
        calibration=calibration,
        architecture=architecture(ckpt) + ("" if tta == "none" else f" + {tta} TTA (2 passes per image)"),
        evaluation=evaluation.model_copy(
            update={"test_split": f"{dataset} test ({len(splits.test)} images)", "score_choice": choice}
        ),
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        training_negatives=list(method.negatives),
        **quantized,
    )
    write_metadata(out, meta)
    return meta


def architecture(ckpt: dict) -> str:
    """The network as a model file names it: a fine-tuned one with its weights' origin and its input size."""
    cfg = ckpt["config"]
    if not cfg.get("image_size") and not ckpt.get("pretrained"):
        return cfg["model"]
    info = ckpt["dataset"]
    origin = f"{ckpt['pretrained']}, fine-tuned" if ckpt.get("pretrained") else "trained"
    return f"{cfg['model']} ({origin} at {info['height']} x {info['width']} px)"


def training_images(train: datasets.Split | stream.Streamed, seed: int) -> torch.Tensor:
    """Training images to set int8 activation ranges from: a streamed folder's decoded as the service decodes."""
    if isinstance(train, stream.Streamed):
        return train.sample(CALIBRATION_IMAGES, seed)
    return train.x


def evaluate_on_test(sess, test: datasets.Split, calibration: Calibration, ood: dict[str, torch.Tensor]) -> Evaluation:
    """Accuracy, the share of the test split rejected at the stored threshold, whether its conformal p-values are
    uniform, and per OOD set the AUROC, FPR at the test split's 95 % TPR, mean max confidence and the share the
    stored threshold accepts; the score histograms of all of them on shared bins (the card's plots)."""
    on_test = session_outputs(sess, test.x)
    test_probs, test_scores = on_test.probabilities, on_test.ood_score
    results, rows = {}, {ID_ROW: test_scores}
    for set_name, images in ood.items():
        on_ood = session_outputs(sess, images)
        ood_probs, ood_scores = on_ood.probabilities, on_ood.ood_score
        rows[set_name] = ood_scores
        results[set_name] = OODResult(
            auroc=ood_metrics.auroc(-test_scores, -ood_scores),
            fpr_at_95_tpr=ood_metrics.fpr_at_tpr(-test_scores, -ood_scores, 0.95),
            mmc=float(ood_probs.max(1).mean()),
            accepted=calibration.accepted_share(ood_scores),
        )
    uniformity = stats.kstest(calibration.p_values(test_scores), "uniform").pvalue
    return Evaluation(
        test_accuracy=float((test_probs.argmax(1) == test.y.numpy()).mean()),
        ood=results,
        id_reject_rate=calibration.rejected_share(test_scores),
        id_p_value_uniformity=float(uniformity),
        histograms=ScoreHistograms.from_scores(rows),
    )


def check(path: Path) -> int:
    """Print the metadata and run a sample batch through onnxruntime."""
    try:
        meta = read_metadata(path)
    except InvalidModelFile as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 1
    summary = meta.model_dump(exclude={"calibration": {"scores"}})
    summary["calibration"]["scores"] = f"<{len(meta.calibration.scores)} sorted validation-score quantiles>"
    print(json.dumps(summary, indent=2))
    sess = open_session(path)
    x = np.random.default_rng(0).random((8, meta.input.channels, meta.input.height, meta.input.width), np.float32)
    t = time.perf_counter()
    probs, score, logits = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    ms = (time.perf_counter() - t) * 1e3
    assert probs.shape == (8, len(meta.classes)) and score.shape == (8,) and logits.shape == probs.shape
    print(
        f"onnxruntime: batch of 8 random images -> probabilities {probs.shape}, ood_score {score.shape}, "
        f"logits {logits.shape} in {ms:.1f} ms; {int(meta.calibration.is_ood(score).sum())}/8 flagged OOD"
    )
    return 0


# the ways the service can bring an image to the input size: the model file's schema is their one list
RESIZE_MODES = typing.get_args(InputSpec.model_fields["resize"].annotation)


def main(argv: list[str] | None = None) -> None:
    d = {k: v.default for k, v in inspect.signature(export_checkpoint).parameters.items()}  # the one set of defaults
    p = argparse.ArgumentParser(
        description="Export a training checkpoint to a self-describing ONNX model file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, help="training checkpoint (RUN/last.pt)")
    p.add_argument("--out", type=Path, help="output .onnx path")
    p.add_argument("--name", default=d["name"], help="model name (default: the output file's stem)")
    p.add_argument("--version", default=d["version"], help="model version string")
    p.add_argument("--tpr", type=float, default=d["tpr"], help="in-distribution TPR the reject threshold keeps")
    p.add_argument(
        "--resize",
        default=d["resize"],
        choices=RESIZE_MODES,
        help="how the service brings other image sizes to the model's input size",
    )
    p.add_argument(
        "--fp16-weights",
        action="store_true",
        default=d["fp16_weights"],
        help="store weights as float16 (half the file; arithmetic stays float32)",
    )
    p.add_argument("--data-root", default=d["data_root"], help="override the checkpoint's data root (for calibration)")
    p.add_argument(
        "--score",
        default=d["score"],
        help="the OOD score to export, for a method with several (IsoMax+: min-distance, entropy, "
        "projection); 'auto': the best on validation data vs training noise (default: the run's)",
    )
    p.add_argument(
        "--tta",
        default=d["tta"],
        choices=tuple(TTA),
        help="test-time augmentation inside the graph: flip averages each image's features with its "
        "mirror image's (twice the network's cost per image, in serving too)",
    )
    p.add_argument(
        "--quantize",
        default=d["precision"],
        choices=PRECISIONS,
        metavar="{int8}",
        help="int8: quantize the network (static QDQ, calibrated on training images); the threshold and "
        "every evaluation row are then measured on the int8 file",
    )
    p.add_argument("--check", type=Path, metavar="MODEL.onnx", help="print a model file's metadata and run it")
    args = p.parse_args(argv)
    if args.check:
        raise SystemExit(check(args.check))
    if not (args.checkpoint and args.out):
        p.error("--checkpoint and --out are required (or --check MODEL.onnx)")
    t = time.perf_counter()
    try:
        meta = export_checkpoint(
            args.checkpoint,
            args.out,
            name=args.name,
            version=args.version,
            tpr=args.tpr,
            resize=args.resize,
            data_root=args.data_root,
            fp16_weights=args.fp16_weights,
            score=args.score,
            tta=args.tta,
            precision=args.quantize,
        )
    except datasets.DatasetUnavailable as e:
        print(f"error: calibration needs the validation split: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (checkpoint.UnreadableCheckpoint, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f}s: "
        f"threshold {meta.calibration.threshold:.4g} at TPR {meta.calibration.tpr} on {meta.calibration.n} "
        f"validation images; test accuracy {meta.evaluation.test_accuracy:.4f}, "
        f"{meta.evaluation.id_reject_rate:.2%} of the test split rejected (conformal p-values' KS p "
        f"{meta.evaluation.id_p_value_uniformity:.3g}); score: {meta.score}"
    )


if __name__ == "__main__":
    main()
