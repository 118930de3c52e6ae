"""``python -m training.card_fields models/*.onnx --data-root ../shared/data``: the two fields a model card page
draws from, added to the bundled files made before they existed. New files get both from the exporter and from
``training.posthoc``; this command is for files already shipped, whose training is hours long.

- ``evaluation.histograms``: measured now, on the file, on its test split and its OOD sets rebuilt as the commands
  that made it built them (the same data sets, seeds and counts). A row is written only when the rebuilt images
  give the stored AUROC and accepted share again (to ``SAME_AUROC`` and one image or so), so the plots show the
  images the table was measured on.
  ``adv-noise`` rows are left out: PGD found them on a checkpoint that is not kept.
- ``training_negatives``: from the method the file's plan in ``training.bundled`` trained; a post-hoc file takes
  those of the classifier it wraps (the file beside it, fixed first).

The graph is not touched; only the metadata entry is rewritten (``modelfile.write_metadata``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from modelfile import ID_ROW, ModelMetadata, ScoreHistograms, open_session, read_metadata, write_metadata

from .bundled import real_ood_images, shipped_models
from .data import datasets
from .evaluation import ood_metrics, ood_sets
from .evaluation.scorers import session_outputs
from .export.exporter import quick_ood_sets
from .methods import build
from .posthoc import images

SAME_AUROC = 5e-4  # rebuilt images that miss the stored AUROC by more are not the images it was measured on
POSTHOC_SET_SIZE = 2000  # training.posthoc.wrap's n per OOD set
SKIPPED = ("adv-noise", "adv-samples")


class NoPlan(ValueError):
    """The file is not one ``training.bundled`` or ``make models-posthoc`` made."""


def plan_of(meta: ModelMetadata, data_root: str):
    """The bundled plan and the run config whose method made this file (an int8 file: its fp32 file's)."""
    for plan in shipped_models(data_root, Path("runs")):
        for config in (plan.config, *plan.alternatives):
            method = build(config.method)
            if plan.file_name(method.label) == meta.name.removesuffix("-int8"):
                return plan, config, method
    raise NoPlan(f"{meta.name}: no plan in training.bundled made a file of this name")


def rebuilt(meta: ModelMetadata, path: Path, data_root: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], list]:
    """The test images, the OOD sets (name -> images) and the training negatives, as the file's maker had them."""
    shape = ood_sets.InputShape(meta.input.channels, meta.input.height, meta.input.width)
    if meta.posthoc is not None:
        ph = meta.posthoc
        test = images.load(meta.dataset, meta.input, meta.classes, data_root=data_root, seed=ph.seed, tpr=0.95).test
        sets: dict[str, torch.Tensor] = {}
        for name in [n for n in meta.evaluation.ood if n not in SKIPPED]:
            sets |= ood_sets.build(name, shape, id_images=test.x, data_root=data_root, n=POSTHOC_SET_SIZE, seed=ph.seed)
        beside = path.parent / ph.classifier
        negatives = read_metadata(beside).training_negatives if beside.is_file() else None
        return test.x, sets, negatives
    plan, config, method = plan_of(meta, data_root)
    test = datasets.load(
        config.dataset, data_root, val_fraction=config.val_fraction, seed=config.seed, download=False
    ).test
    sets = {**quick_ood_sets(test.x, shape, seed=0), **real_ood_images(plan.ood_sets, data_root, shape, test.x)}
    return test.x, sets, list(method.negatives)


def fill(path: Path, data_root: str) -> list[str]:
    """Measure and write; returns one line per row saying whether it was written and why."""
    meta = read_metadata(path)
    test_x, sets, negatives = rebuilt(meta, path, data_root)
    sess = open_session(path)
    id_scores = session_outputs(sess, test_x).ood_score
    rows, report = {ID_ROW: id_scores}, []
    for name, stored in meta.evaluation.ood.items():
        if name not in sets:
            report.append(f"  {name}: left out (an attack found these images; they are not rebuilt here)")
            continue
        scores = session_outputs(sess, sets[name]).ood_score
        again, accepted = ood_metrics.auroc(-id_scores, -scores), meta.calibration.accepted_share(scores)
        said = f"AUROC {again:.5f} (stored {stored.auroc:.5f}), accepted {accepted:.4f} (stored {stored.accepted})"
        if abs(again - stored.auroc) > SAME_AUROC or (
            stored.accepted is not None and abs(accepted - stored.accepted) > 1.5 / len(scores)
        ):
            report.append(f"  {name}: left out, not the same images: {said}")
            continue
        rows[name] = scores
        report.append(f"  {name}: written, {len(scores)} images: {said}")
    evaluation = meta.evaluation.model_copy(update={"histograms": ScoreHistograms.from_scores(rows)})
    write_metadata(path, meta.model_copy(update={"evaluation": evaluation, "training_negatives": negatives}))
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.card_fields", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="bundled model files (post-hoc ones after their classifier)")
    p.add_argument("--data-root", default="../shared/data", help="where the data sets lie (never downloaded)")
    args = p.parse_args(argv)
    # a post-hoc file copies its classifier's negatives: the classifiers first
    for path in sorted(args.files, key=lambda f: read_metadata(f).posthoc is not None):
        start = time.perf_counter()
        try:
            report = fill(path, args.data_root)
        except (NoPlan, datasets.DatasetUnavailable) as e:
            raise SystemExit(f"error: {e}") from None
        print(f"{path.name}: {time.perf_counter() - start:.0f} s", *report, sep="\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
