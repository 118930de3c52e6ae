"""The model card written beside a post-hoc file: what the classifier, the feature networks, the fit, the threshold
and the evaluation each saw, with every figure read from the written file's metadata (measured on that file)."""

from __future__ import annotations

from modelfile import ModelMetadata


def markdown(meta: ModelMetadata, command: str, seconds: float) -> str:
    ph = meta.posthoc
    ev = meta.evaluation
    lines = [
        f"# {meta.name}",
        "",
        f"`{ph.classifier}` ({meta.architecture}) wrapped by `python -m training.posthoc`: {meta.score}.",
        "",
        "| | |",
        "|---|---|",
        f"| classes | {', '.join(meta.classes)} |",
        f"| input | {meta.input.channels}x{meta.input.height}x{meta.input.width} {meta.input.color_mode}, "
        f"{meta.input.resize}; the classifier's own convention in the graph: pixels {ph.classifier_input.pixel_range}, "
        f"{ph.classifier_input.channel_order}, mean {ph.classifier_input.mean}, std {ph.classifier_input.std} |",
        f"| precision | {meta.precision} |",
    ]
    for s in ph.sources:
        where = f"tensor `{s.tensor}`" if s.tensor else f"run at {s.input_size} px, weights: {s.weights}"
        lines.append(f"| feature source `{s.name}` | {s.dim} features, {where} |")
    for s in ph.scores:
        fitted = ", ".join(f"{k} {v}" for k, v in s.fitted.items()) or "nothing fitted"
        lines.append(f"| score `{s.score}` on `{s.source}` | {fitted} |")
    lines += [
        f"| combination | {ph.combination} |",
        f"| fitted on | {ph.fit_images} in-distribution images; p-value tables on {ph.reference_images} others |",
        f"| reject threshold | {meta.calibration.threshold:.6g}, keeps {meta.calibration.tpr:.0%} of "
        f"{meta.calibration.n} images ({meta.calibration.split}) |",
        f"| held-out images rejected | {ph.held_out_reject_rate:.2%} of {ph.held_out_images} (neither fit nor "
        "threshold saw them) |",
    ]
    if ev.test_accuracy is not None:
        lines.append(f"| test accuracy | {ev.test_accuracy:.4f} on {ev.test_split}; rejected {ev.id_reject_rate:.2%} |")
    lines += ["", "## OOD detection (in-distribution test images = positive class)", ""]
    lines += ["| OOD set | AUROC | FPR@95%TPR | accepted at the stored threshold |", "|---|---|---|---|"]
    lines += [f"| {n} | {r.auroc:.4f} | {r.fpr_at_95_tpr:.4f} | {r.accepted:.2%} |" for n, r in ev.ood.items()]
    if ph.choice:
        lines += ["", f"## The choice (`--score auto`): mean AUROC against {ph.choice_set}", ""]
        lines += ["| candidate | mean AUROC |", "|---|---|"]
        lines += [f"| {label} | {auroc:.4f} |" for label, auroc in ph.choice.items()]
        lines += ["", "The choice never saw the OOD sets above; its in-distribution images were the calibration part."]
    lines += ["", "## Reproduce", "", f"    {command}", "", f"Took {seconds / 60:.1f} min on this machine's CPU."]
    return "\n".join(lines) + "\n"
