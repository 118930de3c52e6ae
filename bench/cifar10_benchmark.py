"""The CIFAR-10 OOD benchmark: resnet_small with every method, the seed paper's CIFAR-10 block beside it.

    python bench/cifar10_benchmark.py --data-root ../shared/data                  # the paper's recipe (GPU days)
    python bench/cifar10_benchmark.py --data-root ../shared/data --budget cpu     # the stated CPU budget

Trains resnet_small on CIFAR-10 (45,000 / 5,000 train / validation, seeded; the 10,000 test images only
in evaluation; random crop with padding 4 and horizontal flips) with every method the registry lists
(plain, CEDA, ACET, IsoMax+, IsoMax+ with ACET, MCD), exports each to ONNX, and evaluates them side by
side with ``training.evaluation.evaluate``: every non-adversarial row is scored by the exported file. OOD sets:
MNIST and Fashion-MNIST as 3-channel 32x32 images, scikit-image's textures, uniform, permuted, training
noise, adversarial noise, adversarial samples and scaled noise; SVHN, CIFAR-100 and ``--extra-ood`` sets
join whenever their test split is under --data-root. Writes ``docs/results/cifar10-benchmark.md`` and
its tables, CSV / JSON and plots under ``docs/results/cifar10-benchmark/``.

It resumes: every training stage keeps its checkpoint under ``--runs`` (committed, about 1 MB each),
continues an unfinished one with ``--resume`` (the loop saves after every epoch) and skips a finished
one; the evaluation is skipped when its checkpoints have not changed. ``--stages`` picks stages.

Budgets (``--budget``; any flag below overrides one setting and the report lists it):
  paper  the paper's recipe: every method from scratch, 100 epochs, batch 128, lr 0.1 divided by 10 at
         50/75/90 %, ACET with 40 PGD steps; evaluation with 200 PGD steps, 10,000 images per OOD set,
         1,000 adversarial starting points. The default.
  cpu    what a 2-core CPU finishes in a few 3-hour sessions: plain, IsoMax+ and MCD's pre-training 15
         epochs from scratch (IsoMax+'s and MCD's heads cannot start from plain's); CEDA fine-tuned 3
         epochs from plain, ACET 2 epochs from CEDA and IsoMax+ACET 2 epochs from IsoMax+ (lr 0.01, 10 PGD
         steps); MCD fine-tuned 2 epochs; evaluation with 100 PGD steps, 2,000 images per OOD set, 500
         adversarial starting points, the whole test split. Estimated 3.3 h on an idle 2-core CPU (from
         ~420 img/s plain, ~46 img/s ACET with 10 PGD steps): 15 epochs ~27 min (x3), CEDA ~12 min, ACET and
         IsoMax+ACET ~33 min each, MCD fine-tuning ~13 min, evaluation ~25 min. Run it again in the next
         session and it goes on where it stopped, as long as the --runs folder is kept in between.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ood_benchmark import METHODS, Method, export_one, log, machine, paper_comparison  # noqa: E402
from training import cli  # noqa: E402
from training.data.datasets import DatasetUnavailable  # noqa: E402
from training.evaluation import evaluate as ev_mod  # noqa: E402
from training.evaluation import ood_sets  # noqa: E402


@dataclass(frozen=True)
class Budget:
    epochs: int  # of every run trained from scratch (MCD: its pre-training)
    finetune_epochs: dict[str, int] = field(default_factory=dict)  # label -> epochs from its base's checkpoint
    finetune_lr: float = 0.01
    train_pgd_steps: int = 40
    mcd_finetune_epochs: int = 10
    batch_size: int = 128
    max_steps: int | None = None  # cap on the optimiser steps of every run (smoke tests)
    eval_pgd_steps: int = 200
    n_ood: int = 10_000
    n_adv: int = 1_000
    n_id: int | None = None


BUDGETS = {
    "paper": Budget(epochs=100),
    "cpu": Budget(
        epochs=15,
        finetune_epochs={"CEDA": 3, "ACET": 2, "IsoMax+ACET": 2},
        train_pgd_steps=10,
        mcd_finetune_epochs=2,
        eval_pgd_steps=100,
        n_ood=2_000,
        n_adv=500,
    ),
}
OOD_SETS = (
    "mnist",
    "fashion-mnist",
    "textures",
    "uniform",
    "permuted",
    "noise",
    "adv-noise",
    "adv-samples",
    "scaled-noise",
)
# What the exported graph computes besides the network; a change re-runs the evaluation.
GRAPH = "network + input-domain guard"
OPTIONAL_SETS = ("svhn", "cifar100")  # rows when their test split is under --data-root (no download offline)

# The seed paper's CIFAR-10 block (Hein et al., CVPR 2019, Table 1; resnet_small): plain / CEDA / ACET.
PAPER_CIFAR10 = [
    ("test error (%)", "test_error", None, (8.87, 8.87, 8.44)),
    ("AUROC vs SVHN", "auroc", "svhn", (0.850, 0.978, 0.981)),
    ("AUROC vs noise (ours: uniform)", "auroc", "uniform", (0.827, 1.000, 1.000)),
    ("AUROC vs noise (ours: training noise)", "auroc", "noise", (0.827, 1.000, 1.000)),
    ("AUROC vs adversarial noise", "auroc", "adv-noise", (0.035, 0.032, 0.999)),
    ("AUROC vs adversarial samples", "auroc", "adv-samples", (0.034, 0.014, 0.512)),
    ("MMC on adversarial noise", "mmc", "adv-noise", (1.000, 0.985, 0.112)),
]
DIFFERENCES = [
    "Gap = ours − paper. What differs from the paper's setup, besides the budget above:",
    "",
    "- OOD sets: the paper's are SVHN, CIFAR-100, LSUN classroom, ImageNet-, noise, adversarial noise and "
    "adversarial samples. SVHN, CIFAR-100, LSUN and ImageNet cannot be downloaded here; SVHN and CIFAR-100 "
    "rows appear (and the SVHN row above is filled) when their test splits are under --data-root. In their "
    "place: MNIST and Fashion-MNIST (gray, repeated to 3 channels, 28 -> 32 px) and `textures` (32-128 px "
    "crops of scikit-image's brick, grass, gravel and stained-tissue photos). scikit-image's other photos "
    "(the `photos` set) are not used: one of them is a cat, which is in-distribution for CIFAR-10.",
    "- CIFAR-10 is read from JPEG files (quality about 75), not the official binaries: pixels are close to, "
    "not identical with, the paper's.",
    "- The paper's *Noise* row is compared with two of ours: `uniform` (raw U[0,1] pixels) and `noise` (the "
    "training noise: uniform + permuted, blurred, rescaled). Adversarial noise starts from the latter.",
    "- The adversarial sets use PGD with the best iterate kept and a fixed step size eps/steps x 2.5 from a random "
    "start in the eps = 0.3 ball; fewer evaluation steps than the paper's can only flatter the robust methods.",
    "- AUROC ranks by each method's own `ood_score` (1 − max softmax for plain/CEDA/ACET: the paper's choice).",
    "- Every exported file guards its score against inputs outside [0, 1] (`training.export.domain_guard`): "
    "scaled noise "
    "with alpha >= 10 gets the largest score, so every method's AUROC there is 1.000 and 0 % is accepted. The "
    "network's own behaviour on it, the paper's point, shows in the MMC column (probabilities are not guarded).",
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data-root",
        default="../shared/data",
        help="holds cifar10-jpg.zip (or CIFAR-10 in any layout "
        "--dataset cifar10 reads), MNIST/raw, FashionMNIST/raw; svhn/, cifar-100-python/ when present",
    )
    p.add_argument("--budget", default="paper", choices=sorted(BUDGETS), help="the recipe (see the docstring)")
    p.add_argument(
        "--runs",
        type=Path,
        default=ROOT / "runs" / "cifar10-benchmark",
        help="checkpoints and stage records, one folder per method (kept between runs, not committed)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="report folder")
    p.add_argument(
        "--stages",
        default=None,
        help="comma-separated stages: method labels (plain, CEDA, ACET, "
        "IsoMax+, IsoMax+ACET, MCD), 'eval' and 'report' (default: all, in that order)",
    )
    p.add_argument("--extra-ood", default="", help="comma-separated extra OOD sets, e.g. imagefolder:PATH")
    p.add_argument("--seed", type=int, default=0, help="seed of training and evaluation")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g = p.add_argument_group("overrides of the budget (each listed in the report)")
    for name in (
        "epochs",
        "train_pgd_steps",
        "mcd_finetune_epochs",
        "batch_size",
        "max_steps",
        "eval_pgd_steps",
        "n_ood",
        "n_adv",
        "n_id",
    ):
        g.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    g.add_argument("--finetune-lr", type=float, default=None)
    return p.parse_args(argv)


def budget_of(args: argparse.Namespace) -> tuple[Budget, list[str]]:
    """The named budget with the command line's overrides, and a line per override."""
    base = BUDGETS[args.budget]
    changes = {k: getattr(args, k) for k in asdict(base) if getattr(args, k, None) is not None}
    lines = [f"{k.replace('_', ' ')}: **{v}** (budget {args.budget}: {getattr(base, k)})" for k, v in changes.items()]
    return replace(base, **changes), lines


# ----------------------------------------------------------------------------------------------- training


def train_argv(method: Method, b: Budget, args: argparse.Namespace, out: Path) -> list[str]:
    """The ``python -m training NAME`` flags of one stage."""
    epochs = b.finetune_epochs.get(method.label)
    start = ["--init-from", str(args.runs / method.base / "last.pt"), "--lr", str(b.finetune_lr)] if epochs else []
    argv = [
        "--dataset",
        "cifar10",
        "--data-root",
        args.data_root,
        "--model",
        "resnet_small",
        "--epochs",
        str(epochs or b.epochs),
        "--batch-size",
        str(b.batch_size),
        "--seed",
        str(args.seed),
        "--out",
        str(out),
        "--no-download",
        *start,
        *(["--max-steps", str(b.max_steps)] if b.max_steps else []),
        *([] if args.progress else ["--no-progress"]),
        *method.flags,
    ]
    bench_args = argparse.Namespace(
        train_pgd_steps=b.train_pgd_steps, mcd_finetune_epochs=b.mcd_finetune_epochs, mcd_finetune_max_steps=b.max_steps
    )
    return argv + method.argv(bench_args)


# flags whose values name places, not the recipe: a checkout elsewhere (another machine or folder) resumes
PLACES = ("--out", "--data-root", "--init-from")


def recipe(argv: list[str]) -> list[str]:
    """The flags of a stage less where things are and how it reports progress."""
    out, skip = [], False
    for a in argv:
        if not skip and a != "--no-progress":
            out.append(a if a not in PLACES else f"{a} ...")
        skip = a in PLACES
    return out


def slim(ckpt_path: Path) -> None:
    """A finished stage keeps its weights, not the optimiser's state (only a resume needs that): half the bytes
    committed."""
    from training.run import checkpoint

    ckpt = checkpoint.load(ckpt_path)
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler", "rng")}, ckpt_path)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_stage(method: Method, b: Budget, args: argparse.Namespace) -> dict:
    """Train one method unless its stage is finished; resume it when a checkpoint of the same flags exists.
    Returns its stamp: the flags, whether it is done, the wall and CPU seconds spent on it so far."""
    out = args.runs / method.label
    argv = train_argv(method, b, args, out)
    stamp_path = out / "bench-stage.json"
    stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else None
    if stamp and stamp["recipe"] != recipe(argv):
        raise SystemExit(
            f"{out} holds a run with other flags ({shlex.join(stamp['recipe'])}); pass --runs to "
            "another folder, or delete it to retrain with these"
        )
    if stamp and stamp["done"]:
        log(f"{method.label}: finished earlier ({stamp['seconds'] / 60:.1f} min), skipped")
        return stamp
    base_stamp = args.runs / str(method.base) / "bench-stage.json"
    if b.finetune_epochs.get(method.label) and not (base_stamp.exists() and json.loads(base_stamp.read_text())["done"]):
        raise SystemExit(f"{method.label} starts from {method.base}'s checkpoint: finish the {method.base} stage first")
    stamp = stamp or {"recipe": recipe(argv), "done": False, "seconds": 0.0, "cpu_seconds": 0.0, "sessions": 0}
    resume = ["--resume"] if (out / "last.pt").exists() or (out / "pretrain" / "last.pt").exists() else []
    log(f"{method.label}: python -m training {method.name} {shlex.join(argv + resume)}")
    out.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(json.dumps(stamp, indent=1))
    t, c = time.perf_counter(), cpu_seconds()
    try:
        cli.main(method.name, argv + resume)
        for done in (out / "last.pt", out / "pretrain" / "last.pt"):
            if done.exists():
                slim(done)
        stamp["done"] = True
    finally:  # an interrupted invocation's epochs are kept, so its time counts too
        stamp.update(
            seconds=stamp["seconds"] + time.perf_counter() - t,
            cpu_seconds=stamp["cpu_seconds"] + cpu_seconds() - c,
            sessions=stamp["sessions"] + 1,
        )
        stamp_path.write_text(json.dumps(stamp, indent=1))
    log(f"{method.label}: trained in {stamp['seconds'] / 60:.1f} min")
    return stamp


# ----------------------------------------------------------------------------------------------- evaluation


def available_sets(args: argparse.Namespace) -> tuple[tuple[str, ...], list[str]]:
    """The OOD sets of this run: the fixed ones, the optional data sets found under --data-root, --extra-ood."""
    sets, missing = list(OOD_SETS), []
    for name in (*OPTIONAL_SETS, *[s for s in args.extra_ood.split(",") if s]):
        try:
            ood_sets.labelled_test(name, args.data_root, n=1)
            sets.append(name)
        except (DatasetUnavailable, ValueError, OSError):
            missing.append(name)
    return tuple(sets), missing


def evaluate(methods: list[Method], b: Budget, args: argparse.Namespace, bench_dir: Path) -> dict:
    """Export every finished model, evaluate them side by side (skipped when nothing changed), write the files."""
    ckpts = {m.label: args.runs / m.label / "last.pt" for m in methods if (args.runs / m.label / "last.pt").exists()}
    sets, missing = available_sets(args)
    cfg = ev_mod.EvalConfig(
        sets=sets,
        data_root=args.data_root,
        n_id=b.n_id,
        n_ood=b.n_ood,
        n_adv=b.n_adv,
        adv_steps=b.eval_pgd_steps,
        seed=args.seed,
        progress=args.progress,
    )
    # what the numbers depend on: not where the data sits or whether bars are drawn
    key = {
        "config": ev_mod._finite({k: v for k, v in asdict(cfg).items() if k not in ("data_root", "progress")}),
        "graph": GRAPH,
        "checkpoints": {k: hashlib.sha256(v.read_bytes()).hexdigest() for k, v in ckpts.items()},
    }
    stamp_path = bench_dir / "eval-stage.json"
    if stamp_path.exists() and json.loads(stamp_path.read_text())["key"] == key:
        log("eval: nothing changed since the last evaluation, skipped")
        return json.loads(stamp_path.read_text())
    t, c = time.perf_counter(), cpu_seconds()
    onnx = {}
    for label, ckpt in ckpts.items():
        log(f"{label}: exporting")
        onnx[label] = export_one(ckpt, args, next(m for m in methods if m.label == label))
    cands = ev_mod.parse_models([f"{k}={v}" for k, v in ckpts.items()], [f"{k}={v}" for k, v in onnx.items()])
    log(f"eval: {', '.join(ckpts)} on {', '.join(sets)}")
    ev = ev_mod.evaluate(cands, cfg)
    ev_mod.write_outputs(ev, bench_dir, title="In-distribution: CIFAR-10 (test split)")
    stamp = {
        "key": key,
        "missing_sets": missing,
        "seconds": time.perf_counter() - t,
        "cpu_seconds": cpu_seconds() - c,
        "results": {m.label: {"test_error": m.test_error, "sets": m.sets} for m in ev.models},
    }
    stamp_path.write_text(json.dumps(ev_mod._finite(stamp), indent=1, allow_nan=False) + "\n")
    log(f"eval: done in {stamp['seconds'] / 60:.1f} min")
    return stamp


# ----------------------------------------------------------------------------------------------- report


def stage_times(stamps: dict[str, dict], ev: dict) -> list[str]:
    rows = ["| stage | wall (min) | CPU (min) | invocations | state |", "|---|---|---|---|---|"]
    for label, s in stamps.items():
        untimed = f"; {s['untimed']}" if s.get("untimed") else ""
        rows.append(
            f"| {label} | {s['seconds'] / 60:.1f} | {s['cpu_seconds'] / 60:.1f} | {s['sessions']} | "
            f"{'finished' if s['done'] else '**unfinished**'}{untimed} |"
        )
    rows.append(
        f"| evaluation (export + all rows) | {ev['seconds'] / 60:.1f} | {ev['cpu_seconds'] / 60:.1f} | 1 | finished |"
    )
    wall = sum(s["seconds"] for s in stamps.values()) + ev["seconds"]
    cpu = sum(s["cpu_seconds"] for s in stamps.values()) + ev["cpu_seconds"]
    rows.append(f"| **total** | **{wall / 60:.1f}** | **{cpu / 60:.1f}** | | |")
    return rows


def checks(results: dict[str, dict]) -> list[str]:
    """The issue's claim (ACET beats plain on adversarial and scaled noise), and where a method does not beat
    plain's MSP, row by row."""
    get = lambda label, row, k="auroc": (results.get(label, {}).get("sets", {}).get(row) or {}).get(k)
    lines = []
    a, p = get("ACET", "adv-noise"), get("plain", "adv-noise")
    if a is not None and p is not None:
        lines.append(
            f"- ACET vs plain, AUROC on adv-noise: {a:.3f} vs {p:.3f} ({a - p:+.3f}): "
            f"**{'ACET better' if a > p else 'ACET NOT better'}**"
        )
    # The files' input-domain guard rejects all scaled noise with alpha >= 10, so their AUROC says nothing about
    # the network there; its mean max confidence (the guard leaves probabilities alone) still does.
    for row in ("scaled-noise x100", "scaled-noise x1000"):
        a, p = get("ACET", row, "mmc"), get("plain", row, "mmc")
        if a is not None and p is not None:
            lines.append(
                f"- ACET vs plain, the network's MMC on {row} (lower is better; the files reject it "
                f"through their input-domain guard): {a:.3f} vs {p:.3f} ({a - p:+.3f}): "
                f"**{'ACET better' if a < p else 'ACET NOT better'}**"
            )
    rows = sorted({r for m in results.values() for r in m["sets"]})
    for label in results:
        if label == "plain":
            continue
        worse = [
            f"{r} ({get(label, r):.3f} < {get('plain', r):.3f})"
            for r in rows
            if get(label, r) is not None and get("plain", r) is not None and get(label, r) < get("plain", r)
        ]
        lines.append(
            f"- {label} does not beat plain's MSP on: {', '.join(worse)}"
            if worse
            else f"- {label} is at least as good as plain on every row"
        )
    return lines


def write_report(
    args: argparse.Namespace,
    b: Budget,
    overrides: list[str],
    methods: list[Method],
    stamps: dict[str, dict],
    ev: dict,
    command: str,
    bench_dir: Path,
) -> Path:
    rel = lambda name: f"cifar10-benchmark/{name}"
    lines = [
        "# CIFAR-10 OOD benchmark: resnet_small, every method, the paper's CIFAR-10 block beside it",
        "",
        f"Produced by `bench/cifar10_benchmark.py`, budget **{args.budget}**; report written "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}. The stages ran over one or more invocations (it resumes); "
        "the table of times at the end adds them up.",
        "",
        "```",
        command,
        "```",
        "",
        "The fast network (fastnet, `--recipe fast`) with outlier exposure, procedural outliers and ACET at 5-40 "
        "PGD steps, on the same OOD sets plus wallpaper packages never trained on: "
        "[cifar10-oe.md](cifar10-oe.md) (`bench/cifar10_oe.py`).",
        "",
        f"- Machine (this invocation): {machine()}.",
        f"- Seed {args.seed} for every training run (data split, order, noise, init) and for the evaluation.",
        f"- Budget: {json.dumps(ev_mod._finite(asdict(b)))}.",
        "- Methods: " + ", ".join(m.label for m in methods) + " (resnet_small, SGD momentum 0.9, lr 0.1 (fine-tuning: "
        f"{b.finetune_lr}) divided by 10 at 50/75/90 % of training, weight decay 5e-4, batch {b.batch_size}; "
        "CEDA/ACET: one noise image per clean image, eps 0.3; IsoMax+: OOD score chosen on validation data vs "
        "training noise; MCD: pre-training, then fine-tuning at lr 0.01 against training noise).",
        "- Scoring: the exported ONNX files through onnxruntime (adversarial sets: attacked on the checkpoint, "
        "scored by the ONNX file).",
    ]
    if ev.get("missing_sets"):
        lines.append(f"- Not under --data-root, so no row: {', '.join(ev['missing_sets'])}.")
    if overrides:
        lines += ["", "**Overrides of the budget:**", "", *[f"- {o}" for o in overrides]]
    lines += [
        "",
        "## Against the seed paper's CIFAR-10 block (Hein et al. 2019, Table 1; resnet_small)",
        "",
        *paper_comparison(ev["results"], PAPER_CIFAR10),
        "",
        *DIFFERENCES,
        "",
        "## Checks",
        "",
        *checks(ev["results"]),
        "",
        (bench_dir / "table.md").read_text().replace("### ", "## ", 1),
        "",
        f"Files: [{rel('results.csv')}]({rel('results.csv')}), [{rel('results.json')}]({rel('results.json')})",
        "",
        f"![score histograms]({rel('hist.png')})",
        "",
        f"![ROC curves]({rel('roc.png')})",
        "",
        "## Time",
        "",
        *stage_times(stamps, ev),
        "",
        "Wall and CPU (user + system, all threads) time of each stage, summed over the invocations that ran "
        "it, including one stopped in the middle (its epochs are kept and the next one resumes after them) "
        "unless it was killed outright; a stage with untimed epochs says so.",
    ]
    report = args.out / "cifar10-benchmark.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped stage still records its time
    given = argv if argv is not None else sys.argv[1:]
    # the report names the command that makes all of it: --stages only splits that work between invocations
    whole = [
        a
        for i, a in enumerate(given)
        if a != "--stages" and (i == 0 or given[i - 1] != "--stages") and not a.startswith("--stages=")
    ]
    command = "python bench/cifar10_benchmark.py " + shlex.join(whole)
    b, overrides = budget_of(args)
    stages = args.stages.split(",") if args.stages else [*(m.label for m in METHODS), "eval", "report"]
    unknown = set(stages) - {m.label for m in METHODS} - {"eval", "report"}
    if unknown:
        raise SystemExit(f"--stages: unknown stage(s) {', '.join(sorted(unknown))}")
    bench_dir = args.out / "cifar10-benchmark"
    bench_dir.mkdir(parents=True, exist_ok=True)
    for m in METHODS:
        if m.label in stages:
            run_stage(m, b, args)
    ev_path = bench_dir / "eval-stage.json"
    if "eval" in stages:
        evaluate(METHODS, b, args, bench_dir)
    if "report" in stages:
        if not ev_path.exists():
            raise SystemExit("report: no evaluation yet; run the 'eval' stage first")
        stamps = {
            m.label: json.loads(p.read_text())
            for m in METHODS
            if (p := args.runs / m.label / "bench-stage.json").exists()
        }
        report = write_report(args, b, overrides, METHODS, stamps, json.loads(ev_path.read_text()), command, bench_dir)
        log(f"wrote {report}")


if __name__ == "__main__":
    main()
