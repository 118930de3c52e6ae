"""Classifier file in, oodserve file out: extract, fit, choose, compile the head, calibrate the written file.

Every number the metadata carries is measured on the written file through onnxruntime: the threshold on the
calibration part, the reject rate on the held-out part, the evaluation rows on the test split and OOD sets.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from modelfile import (
    METADATA_KEY,
    OUTPUT_NAMES,
    Calibration,
    ClassifierInput,
    InputSpec,
    ModelMetadata,
    PostHoc,
    PostHocScore,
    metadata_from_props,
    open_session,
    write_metadata,
)

from ..data import datasets, noise
from ..evaluation import ood_sets
from ..export import domain_guard
from ..export.exporter import evaluate_on_test
from ..export.quantize import CALIBRATION_IMAGES, to_int8
from . import attack, choice, graph, images, parts, sources

NOISE_SET = "procedural noise"


@dataclass
class Request:
    classifier: Path
    out: Path
    images: str  # a folder or a data set name
    input: InputSpec | None = None  # None: from the classifier's oodserve metadata
    classes: list[str] | None = None
    classifier_input: ClassifierInput = field(default_factory=lambda: ClassifierInput(mean=[0.0], std=[1.0]))
    logits: str | None = None
    features: str | None = None
    pretrained: list = field(default_factory=list)  # sources.Branch, built by the caller
    score: str = "auto"
    outliers: list[str] = field(default_factory=list)
    evaluate: list[str] = field(default_factory=list)  # OOD sets for the card (ood_sets names)
    tpr: float = 0.95
    seed: int = 0
    data_root: str = "data"
    name: str | None = None
    version: str = "1"
    precision: str = "fp32"  # int8: the classifier and feature networks quantized (training.export.quantize)


@dataclass
class Result:
    meta: ModelMetadata
    choice: dict[str, float]
    held_out_reject_rate: float


def wrap(req: Request) -> Result:
    model = onnx.load(str(req.classifier))
    base = _metadata(model)
    spec = req.input or (base.input if base else None)
    classes = req.classes or (base.classes if base else None)
    if spec is None or classes is None:
        raise ValueError("the classifier is not an oodserve file: give --size, --channels and --classes")
    clf = graph.classifier(model, logits=req.logits, features=req.features)
    shape = (spec.channels, spec.height, spec.width)
    w = sources.Wrapped(clf, sources.preprocess(req.classifier_input, shape), shape, list(req.pretrained))
    data = images.load(req.images, spec, classes, data_root=req.data_root, seed=req.seed, tpr=req.tpr)
    extractor = _extractor(w, data, req)
    session, names = in_memory_session(extractor), list(w.tensors)
    arrays = {p: sources.run(session, getattr(data, p).x, names, desc=f"features ({p})") for p in PARTS}
    _check_classes(arrays["fit"][sources.LOGITS], classes)
    labels = data.fit.y.numpy()
    labels = np.where(labels >= 0, labels, arrays["fit"][sources.LOGITS].argmax(1))  # predicted where unknown
    fitted = choice.Fitted(arrays["fit"], labels, clf.head)
    if req.score == "auto":
        outliers = _outlier_arrays(req, session, names, shape, data.calibration.x)
        pool = choice.candidates(set(names) - {sources.LOGITS}, clf.head is not None)
        picked, means = choice.auto(fitted, pool, arrays["calibration"], outliers, arrays["reference"])
    else:
        picked, means = choice.Candidate.parse(req.score), {}
    components = fitted.components(picked, arrays["reference"])
    head = parts.Head(components)
    dims = {n: (a.shape[1] if a.ndim == 2 else 1) for n, a in arrays["fit"].items()}
    _write_graph(sources.served(extractor, head, dims), req.out)
    surrogate = None
    if attack.ADV_SET in req.evaluate:
        scale = attack.scale_of([fitted.component_scores(c, arrays["calibration"]) for c in picked.components])
        surrogate = attack.Surrogate(extractor, names, components, scale)
    return _calibrate_and_describe(req, w, data, picked, components, means, base, spec, classes, dims, surrogate)


PARTS = ("fit", "reference", "calibration")


def _extractor(w: sources.Wrapped, data: images.Parts, req: Request) -> onnx.ModelProto:
    """The extractor graph, quantized for an int8 file before anything is fitted to its outputs."""
    extractor = w.extractor()
    if req.precision == "fp32":
        return extractor
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "extractor.onnx"
        onnx.save(graph.float32_weights(extractor), str(path))
        pick = np.sort(np.random.default_rng([req.seed, 8]).permutation(len(data.fit))[:CALIBRATION_IMAGES])
        bodies = tuple(n for n in w.tensors if n != sources.OWN_SCORE)
        to_int8(path, datasets.as_float(data.fit.x[pick]).numpy(), bodies)
        return onnx.load(str(path))


def _calibrate_and_describe(req, w, data, picked, components, means, base, spec, classes, dims, surrogate) -> Result:
    sess = open_session(req.out)
    single = len(picked.components) == 1
    cal_x = torch.cat([data.reference.x, data.calibration.x]) if single else data.calibration.x
    cal_scores = sources.run(sess, cal_x, [OUTPUT_NAMES[1]])[OUTPUT_NAMES[1]]
    calibration = Calibration.from_scores(cal_scores, req.tpr, split=f"{data.where}, calibration part")
    held = sources.run(sess, data.held_out.x, [OUTPUT_NAMES[1]])[OUTPUT_NAMES[1]]
    held_rate = calibration.rejected_share(held)
    test = data.test if data.test is not None else data.held_out
    shape = ood_sets.InputShape(*w.shape)
    ood = {}
    for name in req.evaluate:
        if name == attack.ADV_SET:
            ood[name] = attack.adversarial_noise(surrogate, test.x, shape, req.seed)
        else:
            ood |= ood_sets.build(name, shape, id_images=test.x, data_root=req.data_root, n=2000, seed=req.seed)
    evaluation = evaluate_on_test(sess, test, calibration, ood)
    test_name = (
        f"{base.dataset} test ({len(test)} images)"
        if data.test is not None and base
        else f"{data.where}, held-out part"
    )
    posthoc = PostHoc(
        classifier=req.classifier.name,
        classifier_input=req.classifier_input,
        sources=w.sources(dims),
        scores=[PostHocScore(score=c.score.name, source=c.source, fitted=c.score.fitted) for c in components],
        combination="single" if single else "fisher",
        choice=means if req.score == "auto" else {},
        choice_set=_choice_set(req) if req.score == "auto" else None,
        fit_images=len(data.fit),
        reference_images=0 if single else len(data.reference),
        held_out_images=len(data.held_out),
        held_out_reject_rate=held_rate,
        seed=req.seed,
    )
    meta = ModelMetadata(
        name=req.name or req.out.stem,
        version=req.version,
        method=f"{base.method if base else 'classifier'}+posthoc"[:64],
        score=describe(picked),
        classes=list(classes),
        input=spec,
        dataset=base.dataset if base else data.where,
        calibration=calibration,
        evaluation=evaluation.model_copy(update={"test_split": test_name}),
        architecture=_architecture(base, w),
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        posthoc=posthoc,
        training_negatives=base.training_negatives if base else None,  # the classifier's, as its file recorded them
        **({"precision": "int8", "quantized_from": req.classifier.name} if req.precision == "int8" else {}),
    )
    write_metadata(req.out, meta)
    return Result(meta, means, held_rate)


def describe(cand: choice.Candidate) -> str:
    """The metadata's ``score``: what ``ood_score`` is, in words (at most 128 characters)."""
    if len(cand.components) == 1:
        return f"post-hoc {cand.label} (higher = more OOD)"
    return f"Fisher's -2 sum log p over the p-values of {cand.label.replace('+', ', ')}"[:128]


def _architecture(base, w: sources.Wrapped) -> str:
    arch = (base.architecture if base and base.architecture else "classifier").split(",")[0]
    nets = [b.source.name for b in w.branches]
    return arch + "".join(f" + {n} features at {b.source.input_size} px" for n, b in zip(nets, w.branches, strict=True))


def _choice_set(req: Request) -> str:
    shown = [Path(path).name + sep + groups for path, sep, groups in (o.partition("#") for o in req.outliers)]
    return ", ".join([*shown, NOISE_SET])


def choice_images(outliers: list[str], shape, id_images: torch.Tensor, seed: int, data_root: str) -> dict:
    """The images ``auto`` chooses against: the procedural noise (drawn from ``id_images``) and crops of each
    ``outliers`` folder or zip (``PATH[#GROUP+...]``), 2,000 of each."""
    g = torch.Generator().manual_seed(seed)
    sets = {NOISE_SET: noise.noise_batch(datasets.as_float(id_images), 2000, g, noise.FAMILIES)}
    for o in outliers:
        sets[o] = ood_sets.outlier_crops(ood_sets.OUTLIERS + o, ood_sets.InputShape(*shape), 2000, seed, data_root)
    return sets


def _outlier_arrays(req, session, names, shape, id_images) -> dict[str, dict[str, np.ndarray]]:
    sets = choice_images(req.outliers, shape, id_images, req.seed, req.data_root)
    return {k: sources.run(session, v, names, desc=f"features ({Path(k).name})") for k, v in sets.items()}


def _metadata(model: onnx.ModelProto):
    props = {p.key: p.value for p in model.metadata_props}
    return metadata_from_props(props) if METADATA_KEY in props else None


def _check_classes(logits: np.ndarray, classes: list[str]) -> None:
    if logits.shape[1] != len(classes):
        raise ValueError(
            f"the classes file names {len(classes)} classes; the classifier's logits have {logits.shape[1]}"
        )


def in_memory_session(model: onnx.ModelProto):
    """An in-memory graph (the extractor) in onnxruntime; a written file opens with ``modelfile.open_session``."""
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _write_graph(model: onnx.ModelProto, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    partial = out.with_name(out.name + ".partial")
    onnx.save(model, str(partial))
    domain_guard.add_to_file(partial)
    partial.replace(out)
