"""The evaluation's outputs: a markdown table shaped like Table 1 of Hein et al. (2019), CSV, plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from . import ood_metrics

METRIC_KEYS = ("mmc", "auroc", "fpr95", "aupr_in", "aupr_out")


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def markdown(ev, title: str | None = None) -> str:
    """Rows = the in-distribution test set then each OOD set; MMC / AUROC / FPR@95 per model."""
    models = ev.models
    cfg = ev.config
    ids = sorted({m.id_test for m in models})
    lines = [f"### {title or 'OOD detection, in-distribution = ' + ', '.join(ids)}", ""]
    head = ["set"]
    for m in models:
        head += [f"{m.label} (TE {100 * m.test_error:.2f} %) MMC", "AUROC", "FPR@95"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    row = [f"{ids[0] if len(ids) == 1 else 'ID test'} (in-dist.)"]
    for m in models:
        row += [fmt(m.id_mmc), "–", "–"]
    lines.append("| " + " | ".join(row) + " |")
    for name in ev.rows:
        row = [name]
        for m in models:
            r = m.sets[name]
            row += [fmt(r.get("mmc")), fmt(r.get("auroc")), fmt(r.get("fpr95"))]
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "AUPR (in-distribution positive / OOD positive):", ""]
    head = ["set"] + [f"{m.label} {k}" for m in models for k in ("AUPR-in", "AUPR-out")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ev.rows:
        row = [name] + [fmt(m.sets[name].get(k)) for m in models for k in ("aupr_in", "aupr_out")]
        lines.append("| " + " | ".join(row) + " |")

    lines += stored_threshold_table(ev)
    lines += [
        "",
        "Models: " + "; ".join(f"`{m.label}` = {m.method} ({m.source}, {m.n_id} ID test images)" for m in models) + ".",
    ]
    sizes = sorted({r["n"] for m in models for k, r in m.sets.items() if not k.startswith("adv")})
    adv = [k for k in ("adv-noise", "adv-samples") if k in ev.rows]
    lines.append(f"Images per fixed set: {', '.join(map(str, sizes))}; seed {cfg.seed}.")
    if adv:
        lines.append(
            f"Adversarial sets: {cfg.n_adv} starting points, {cfg.adv_steps} PGD steps, L-inf eps "
            f"{cfg.eps}, step eps/steps x {cfg.step_factor}, best iterate kept; adv-noise maximises "
            f"{'minus the OOD score' if cfg.adv_objective == 'score' else 'the max log-probability'}."
        )
    for name in ev.rows:
        notes = [f"{m.label}: {m.sets[name]['note']}" for m in models if m.sets[name].get("note")]
        if notes:
            lines.append(f"`{name}`: " + "; ".join(notes) + ".")
    lines.append(
        "AUROC and AUPR with in-distribution as the positive class; FPR@95 = share of OOD inputs "
        "accepted at the threshold that keeps 95 % of in-distribution test inputs."
    )
    return "\n".join(lines)


def stored_threshold_table(ev) -> list[str]:
    """What each model file's stored threshold does: the share of the ID test split it rejects (the promise
    is about 1 - calibration.tpr) and the share of each set it accepts. Models without a file have no row."""
    served = [m for m in ev.models if m.threshold is not None]
    if not served:
        return []
    lines = [
        "",
        "At the stored threshold (what is served): ID rejected, OOD accepted:",
        "",
        "| set | " + " | ".join(f"{m.label} (threshold {m.threshold:.4g})" for m in served) + " |",
        "|" + "---|" * (len(served) + 1),
        "| ID test rejected | " + " | ".join(f"{100 * m.id_reject_rate:.2f} %" for m in served) + " |",
    ]
    for name in ev.rows:
        cells = [m.sets[name].get("accepted") for m in served]
        lines.append(
            f"| {name} accepted | " + " | ".join("n/a" if v is None else f"{100 * v:.2f} %" for v in cells) + " |"
        )
    return lines


def write_csv(ev, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "method", "source", "id_test", "test_error", "set", "n", *METRIC_KEYS, "note"])
        for m in ev.models:
            base = [m.label, m.method, m.source, m.id_test, f"{m.test_error:.6f}"]
            w.writerow([*base, "in-distribution", m.n_id, f"{m.id_mmc:.6f}", "", "", "", "", ""])
            for name in ev.rows:
                r = m.sets[name]
                vals = ["" if r.get(k) is None or math.isnan(r[k]) else f"{r[k]:.6f}" for k in METRIC_KEYS]
                w.writerow([*base, name, r["n"], *vals, r.get("note", "")])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_histograms(ev, path: Path) -> None:
    """One panel per (OOD set, model): the served ood_score of the ID test set against the set's."""
    plt = _plt()
    rows = [r for r in ev.rows if any(r in ev.outputs[m.label] for m in ev.models)]
    n_rows, n_cols = max(1, len(rows)), len(ev.models)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.2 * n_cols, 1.9 * n_rows), squeeze=False, constrained_layout=True
    )
    for j, m in enumerate(ev.models):
        outs = ev.outputs[m.label]
        finite = np.concatenate([o.ood_score[np.isfinite(o.ood_score)] for o in outs.values()])
        lo, hi = np.percentile(finite, [0.1, 99.9]) if len(finite) else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 41)
        for i, name in enumerate(rows):
            ax = axes[i, j]
            ax.hist(np.clip(outs["id"].ood_score, lo, hi), bins=bins, alpha=0.55, density=True, label="ID test")
            if name in outs and len(outs[name].ood_score):
                ax.hist(np.clip(outs[name].ood_score, lo, hi), bins=bins, alpha=0.55, density=True, label=name)
            ax.set_yscale("log")
            ax.tick_params(labelsize=6)
            auroc = m.sets[name].get("auroc")
            ax.set_title(f"{m.label} vs {name} (AUROC {fmt(auroc)})", fontsize=7)
            if i == n_rows - 1:
                ax.set_xlabel("ood_score (higher = more OOD)", fontsize=7)
            if j == 0:
                ax.legend(fontsize=6, loc="upper center")
    fig.savefig(path, dpi=72)
    plt.close(fig)


def plot_roc(ev, path: Path) -> None:
    """ROC curves (ID positive) per model, one curve per OOD set."""
    plt = _plt()
    n = len(ev.models)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False, constrained_layout=True)
    for j, m in enumerate(ev.models):
        ax = axes[0, j]
        ranked = ev.ranked[m.label]
        ax.set_prop_cycle(color=plt.cm.tab20(np.linspace(0, 1, 20)))
        for name in ev.rows:
            if name not in ranked or len(ranked[name]) == 0:
                continue
            fpr, tpr = ood_metrics.roc(ranked["id"], ranked[name])
            ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({fmt(m.sets[name]['auroc'])})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls="--")
        ax.axhline(0.95, color="grey", lw=0.5, ls=":")
        ax.set_title(f"{m.label} ({m.method})", fontsize=9)
        ax.set_xlabel("FPR (OOD accepted)")
        ax.set_ylabel("TPR (ID kept)")
        ax.legend(fontsize=6, loc="lower right")
    fig.savefig(path, dpi=80)
    plt.close(fig)
