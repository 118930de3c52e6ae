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
    base = meta.method.removesuffix("+posthoc")
    nets = [f"`{x.name}` ({x.weights}) was trained elsewhere and is used frozen" for x in ph.sources if x.name != "own"]
    lines += [
        "",
        "## What saw what",
        "",
        f"- The classifier: trained by `{base}` on `{meta.dataset}` before it was wrapped; unchanged here."
        + (f" {'; '.join(nets)}." if nets else ""),
        f"- The scores were fitted on {ph.fit_images} in-distribution images"
        + (f"; their p-value tables on {ph.reference_images} others" if ph.reference_images else "")
        + f"; the threshold on {meta.calibration.n} more ({meta.calibration.split}); {ph.held_out_images} were held "
        "out of all three.",
        "- The OOD sets below were never used to fit, choose or calibrate anything"
        + (f" (the choice saw {ph.choice_set})." if ph.choice_set else "."),
        "- `adv-noise`, where reported: uniform and pixel-permuted noise moved by PGD within L-inf 0.3 through this "
        "file's own graph (training.posthoc.attack).",
    ]
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
