"""Every post-hoc score on one classifier, OpenOOD style: AUROC / FPR@95 / accepted at the threshold per OOD set,
and the in-distribution test images rejected at that threshold.

    python bench/posthoc_table.py models/cifar10-acet-oe-fastnet.onnx --data-root ../shared/data \\
        --pretrained efficientnet-lite0 --out docs/results/posthoc.md

The classifier and the feature network run once through onnxruntime (``training.posthoc``'s extractor graph); each
score is then computed by its numpy reference, which equals the score's subgraph in a written file within 1e-4
(``tests/training/posthoc``). Fit, threshold (calibration part, TPR 0.95) and test split are ``training.posthoc``'s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx

from modelfile import ClassifierInput, FeatureSource, metadata_from_props
from training.evaluation import ood_metrics, ood_sets
from training.nets import pretrained
from training.posthoc import choice, graph, images, sources, wrap

UNSEEN = "outliers:wallpapers.zip#palapeli-data+ukui-wallpapers+sway-backgrounds+xfdesktop4-data"
IDENTITY = ClassifierInput(mean=[0.0] * 3, std=[1.0] * 3)  # an oodserve file normalises inside its own graph
SEEN = "wallpapers.zip#gnome-backgrounds+lxqt-themes+plasma-workspace-wallpapers"  # the photo model's OE images
CHOICE_NOISE = wrap.NOISE_SET
SETS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "textures": "textures", "unseen wallpapers": UNSEEN}


def extract(path: Path, nets: list[str], data_root: str, seed: int):
    model = onnx.load(str(path))
    meta = metadata_from_props({p.key: p.value for p in model.metadata_props})
    shape = (meta.input.channels, meta.input.height, meta.input.width)
    branches = []
    for name in nets:
        module, spec = pretrained.load(name)
        source = FeatureSource(name=spec.name, dim=spec.feature_dim, input_size=spec.input_size, weights=spec.weights)
        branches.append(sources.branch(module, source, shape))
    clf = graph.classifier(model)
    w = sources.Wrapped(clf, sources.preprocess(IDENTITY, shape), shape, branches)
    data = images.load("cifar10", meta.input, meta.classes, data_root=data_root, seed=seed, tpr=0.95)
    session, names = wrap.in_memory_session(w.extractor()), list(w.tensors)
    run = lambda x, what: sources.run(session, x, names, desc=what)
    arrays = {p: run(getattr(data, p).x, p) for p in ("fit", "reference", "calibration")}
    arrays["test"] = run(data.test.x, "test")
    inshape = ood_sets.InputShape(*shape)
    for label, name in SETS.items():
        x = ood_sets.build(name, inshape, id_images=data.test.x, data_root=data_root, n=2000, seed=seed)[name]
        arrays[label] = run(x, label)
    # what `--score auto` chooses against, drawn as training.posthoc draws it
    for label, x in wrap.choice_images([SEEN], shape, data.calibration.x, seed, data_root).items():
        arrays[label] = run(x, label)
    return clf, data, names, arrays


def table(path: Path, nets: list[str], data_root: str, seed: int) -> list[str]:
    clf, data, names, arrays = extract(path, nets, data_root, seed)
    fitted = choice.Fitted(arrays["fit"], data.fit.y.numpy(), clf.head)
    pool = choice.candidates(set(names) - {sources.LOGITS}, clf.head is not None)
    outliers = {k: arrays[k] for k in (SEEN, CHOICE_NOISE)}
    picked, _ = choice.auto(fitted, pool, arrays["calibration"], outliers, arrays["reference"])
    pairs = [choice.Candidate.parse(f"{a}@{n}") for n in nets for a in ("own+knn", "energy+mahalanobis-normed")]
    pool += [c for c in pairs if c not in pool]
    pool += [picked] if picked not in pool else []
    rows = ["| score | " + " | ".join(SETS) + " | mean AUROC | ID test rejected |", "|---" * (len(SETS) + 3) + "|"]
    means = {}
    for cand in pool:
        s = lambda part, cand=cand: fitted.candidate_scores(cand, arrays[part], arrays["reference"])
        cal = s("calibration") if len(cand.components) > 1 else np.concatenate([s("reference"), s("calibration")])
        threshold = float(np.quantile(cal, 0.95, method="higher"))
        test = s("test")
        cells, aurocs = [], []
        for label in SETS:
            ood = s(label)
            aurocs.append(ood_metrics.auroc(-test, -ood))
            fpr = ood_metrics.fpr_at_tpr(-test, -ood, 0.95)
            cells.append(f"{aurocs[-1]:.4f} / {fpr:.3f} / {(ood <= threshold).mean():.1%}")
        means[cand.label] = float(np.mean(aurocs))
        label = cand.label + (" (auto)" if cand == picked else "")
        rows.append(
            f"| {label} | " + " | ".join(cells) + f" | {means[cand.label]:.4f} | {(test > threshold).mean():.2%} |"
        )
    best = max(means, key=means.get)
    rows += [
        "",
        f"`--score auto` (against the seen wallpaper packages and the procedural noise) picks `{picked.label}`: mean "
        f"AUROC {means[picked.label]:.4f}; the table's best is `{best}` at {means[best]:.4f} "
        f"(gap {means[best] - means[picked.label]:.4f}).",
    ]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("classifiers", type=Path, nargs="+")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--pretrained", action="append", default=[])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    t = time.perf_counter()
    sections = []
    for path in args.classifiers:
        sections += [f"## `{path.name}`", "", *table(path, args.pretrained, args.data_root, args.seed), ""]
    minutes = (time.perf_counter() - t) / 60
    text = "\n".join(
        [
            "# Post-hoc scores on CIFAR-10 classifiers",
            "",
            "Each cell: AUROC / FPR at 95 % TPR / share accepted at the score's own threshold (set at TPR 0.95 on the",
            "calibration part of the CIFAR-10 validation split); in-distribution = the CIFAR-10 test split (10,000",
            "images); each OOD set 2,000 images. `own` features: the classifier's penultimate layer; `@NET`: a",
            "pretrained network run on the same 32 px image, upsampled in the graph; the score `own` alone is the",
            "file's own score; `a+b`: Fisher's method over their p-values. The numpy reference of each score equals",
            "the subgraph a written file computes within 1e-4 (tests/training/posthoc).",
            "",
            *sections,
            "    python bench/posthoc_table.py "
            + " ".join(str(c) for c in args.classifiers)
            + f" --data-root {args.data_root} "
            + " ".join(f"--pretrained {n}" for n in args.pretrained)
            + f" --seed {args.seed}",
            "",
            f"{minutes:.1f} min on this machine (2 cores, AVX2), seed {args.seed}.",
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
