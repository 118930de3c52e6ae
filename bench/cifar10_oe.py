"""Outlier exposure, procedural outliers and ACET on the fast CIFAR-10 network: what each negative, loss and PGD
budget buys, measured on the exported files.

    python bench/cifar10_oe.py --data-root ../shared/data                       # every variant
    python bench/cifar10_oe.py --data-root ../shared/data --variants oe,acet-5x1

1. The base: the ``fast`` recipe's plain model (seed 0), trained here with the command a user runs if it is not
   under ``--runs/base`` (23 min).
2. Each variant is a fine-tune of the base (or of another variant, for ACET) with ``python -m training.acet``:
   its flags are in VARIANTS below, the command is printed and stored. A rerun skips a finished stage.
3. Each variant is exported (``training.export``: calibrated on the validation split) and evaluated with
   ``training.evaluation``: every non-adversarial row by the exported file; ``adv-noise`` is training noise moved
   by 100 PGD steps with 2 random restarts on the checkpoint (the strongest point counts), then scored by the
   file. OOD sets: MNIST, Fashion-MNIST, scikit-image textures, the wallpaper packages held out of training
   (``outliers:wallpapers.zip#...``, a source never trained on), uniform, permuted, training noise,
   adversarial noise, scaled noise; 2,000 images each (300 adversarial starts); the whole test split.

Writes ``--out/VARIANT/`` (training.evaluation's table, JSON, plots) and ``--out/summary.json`` (per variant: the
command, training minutes, test error, ID reject rate, AUROC and accepted share per set), from which
docs/results/cifar10-oe.md is written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.run.checkpoint import load as load_checkpoint  # noqa: E402

WALLPAPERS = "wallpapers.zip"  # under --data-root
HELD_OUT = ("palapeli-data", "ukui-wallpapers", "sway-backgrounds", "xfdesktop4-data")  # never trained on
CLASSIC = "uniform,permuted,strokes"
PROCEDURAL = "fractal,dead-leaves,spectral,patch-shuffled,blended"
EVERY_FAMILY = f"{CLASSIC},{PROCEDURAL}"
FINE_TUNE = [
    "--at-frac",
    "1",
    "--init-from",
    "{base}",
    "--epochs",
    "4",
    "--lr",
    "0.1",
    "--warmup",
    "0.1",
    "--pgd-steps",
    "0",
    "--noise-loss",
    "uniform",
]


def outliers(share: float) -> list[str]:
    return [
        "--outliers",
        "{data_root}/" + WALLPAPERS,
        "--outlier-holdout",
        ",".join(HELD_OUT),
        "--outlier-share",
        str(share),
    ]


ACET_OE = ["--noise", EVERY_FAMILY, *outliers(0.5)]

# name -> (the run it starts from, extra flags after FINE_TUNE's)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "ceda-classic": ("base", ["--noise", CLASSIC]),
    "procedural": ("base", ["--noise", EVERY_FAMILY]),
    "oe": ("base", ["--noise", EVERY_FAMILY, *outliers(0.5)]),
    "oe-maxconf": ("base", ["--noise", EVERY_FAMILY, *outliers(0.5), "--noise-loss", "max_conf"]),
    "oe-wallpapers-only": ("base", ["--noise", CLASSIC, *outliers(1.0)]),
    # the fast recipe's label smoothing (0.2) caps every confidence, the in-distribution one too (MMC 0.70)
    "oe-no-smoothing": ("base", ["--noise", EVERY_FAMILY, *outliers(0.5), "--label-smoothing", "0"]),
    # ACET: PGD steps x epochs, fine-tuned from the OE model (which is already unconfident on the noise); PGD moves
    # the families far from every image (uniform, permuted, strokes: --attacked's default) and nothing else
    "acet-5x1": ("oe", [*ACET_OE, "--pgd-steps", "5", "--epochs", "1"]),
    "acet-5x2": ("oe", [*ACET_OE, "--pgd-steps", "5", "--epochs", "2"]),
    "acet-10x1": ("oe", [*ACET_OE, "--pgd-steps", "10", "--epochs", "1"]),
    "acet-40x1": ("oe", [*ACET_OE, "--pgd-steps", "40", "--epochs", "1"]),
    "acet-40x1-after-no-smoothing": ("oe-no-smoothing", [*ACET_OE, "--pgd-steps", "40", "--epochs", "1"]),
    "acet-40x1-no-smoothing": (
        "oe-no-smoothing",
        [*ACET_OE, "--pgd-steps", "40", "--epochs", "1", "--label-smoothing", "0"],
    ),
    # the diagnosis: PGD on every family, blends and shuffled tiles included (near real images)
    "acet-every-family-5x1": ("oe", [*ACET_OE, "--pgd-steps", "5", "--epochs", "1", "--attacked", EVERY_FAMILY]),
    # the diagnosis: the previous bundled recipe's ACET (from plain, log max-softmax loss, the classic noise)
    "acet-plain-maxconf-5x1": (
        "base",
        ["--noise", CLASSIC, "--noise-loss", "max_conf", "--pgd-steps", "5", "--epochs", "1"],
    ),
}
OOD_SETS = (
    "mnist",
    "fashion-mnist",
    "textures",
    f"outliers:{WALLPAPERS}#{'+'.join(HELD_OUT)}",
    "uniform",
    "permuted",
    "noise",
    "adv-noise",
    "scaled-noise",
)


def base_command(args: argparse.Namespace, run: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "training.acet",
        "--dataset",
        "cifar10",
        "--data-root",
        args.data_root,
        "--no-download",
        "--recipe",
        "fast",
        "--seed",
        str(args.seed),
        "--out",
        str(run),
        "--no-progress",
    ]


def variant_command(args: argparse.Namespace, name: str) -> list[str]:
    start, flags = VARIANTS[name]
    base = Path(args.runs) / start / "last.pt"
    fill = lambda f: f.format(base=base, data_root=args.data_root)
    cmd = base_command(args, Path(args.runs) / name) + [fill(f) for f in FINE_TUNE + flags]
    return cmd


def train(cmd: list[str], run: Path) -> None:
    print("$ " + shlex.join(["python", *cmd[1:]]), flush=True)
    done = run / "last.pt"
    if done.exists() and finished(load_checkpoint(done)):
        print(f"  {run.name}: finished, skipped", flush=True)
        return
    subprocess.run(cmd + (["--resume"] if done.exists() else []), check=True)


def finished(ckpt: dict) -> bool:
    cfg = ckpt["config"]
    per_epoch = round(50_000 * (1 - cfg["val_fraction"])) // cfg["batch_size"]
    return ckpt["step"] >= cfg["epochs"] * per_epoch


def evaluate(args: argparse.Namespace, name: str) -> dict:
    run, out = Path(args.runs) / name, Path(args.out) / name
    ckpt_path, onnx = run / "last.pt", run / f"{name}.onnx"
    result = out / "results.json"
    if not (result.exists() and result.stat().st_mtime > ckpt_path.stat().st_mtime):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training.export",
                "--checkpoint",
                str(ckpt_path),
                "--out",
                str(onnx),
                "--name",
                f"cifar10-{name}-fastnet",
            ],
            check=True,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training.evaluation",
                "--checkpoint",
                f"{name}={ckpt_path}",
                "--onnx",
                f"{name}={onnx}",
                "--ood",
                ",".join(OOD_SETS),
                "--data-root",
                args.data_root,
                "--n-ood",
                "2000",
                "--n-adv",
                "300",
                "--adv-steps",
                "100",
                "--adv-restarts",
                "2",
                "--seed",
                "0",
                "--out",
                str(out),
                "--title",
                f"{name} (fastnet, CIFAR-10)",
                "--no-progress",
            ],
            check=True,
        )
    model = json.loads(result.read_text())["models"][0]
    ckpt = load_checkpoint(ckpt_path)
    return {
        "train_minutes": ckpt["train_seconds"] / 60,
        "test_error": model["test_error"],
        "id_reject_rate": model["id_reject_rate"],
        "sets": {s: {"auroc": v["auroc"], "accepted": v.get("accepted")} for s, v in model["sets"].items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--variants",
        default=",".join(["base", *VARIANTS]),
        help="comma-separated, from: base (the plain model itself), " + ", ".join(VARIANTS),
    )
    p.add_argument("--runs", default="runs/cifar10-oe", help="checkpoints and exported files")
    p.add_argument("--out", default="docs/results/cifar10-oe", help="evaluations and summary.json")
    args = p.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [n for n in names if n not in VARIANTS and n != "base"]:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    runs = Path(args.runs)
    base = [*base_command(args, runs / "base"), "--at-frac", "0"]
    train(base, runs / "base")
    summary_path = Path(args.out) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in names:
        start = VARIANTS[name][0] if name != "base" else "-"
        if start not in ("base", "-") and not (runs / start / "last.pt").exists():
            p.error(f"{name} starts from {start}: run that variant first")
        cmd = variant_command(args, name) if name != "base" else base
        train(cmd, runs / name)
        summary[name] = {"command": shlex.join(["python", *cmd[1:]]), "starts_from": start, **evaluate(args, name)}
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
        (Path(args.out) / "table.md").write_text(table(summary))
        row = summary[name]
        print(
            f"{name}: test error {100 * row['test_error']:.2f} %, ID rejected {100 * row['id_reject_rate']:.2f} %, "
            f"{row['train_minutes']:.1f} min; AUROC "
            + ", ".join(f"{s.split('#')[0]} {v['auroc']:.4f}" for s, v in row["sets"].items()),
            flush=True,
        )


def short(set_name: str) -> str:
    return "wallpapers (unseen)" if set_name.startswith("outliers:") else set_name.replace("scaled-noise ", "scaled ")


def table(summary: dict) -> str:
    """Markdown: one row per variant (in VARIANTS' order): minutes, test error, ID rejected, then AUROC / accepted
    at the stored threshold per OOD set."""
    names = [n for n in ("base", *VARIANTS) if n in summary]
    sets = [s for s in summary[names[0]]["sets"] if s not in ("scaled-noise x1", "scaled-noise x10")]
    head = "| variant | from | min | test error | ID rejected | " + " | ".join(short(s) for s in sets) + " |\n"
    head += "|---" * (5 + len(sets)) + "|\n"
    rows = []
    for n in names:
        r = summary[n]
        cells = [f"{r['sets'][s]['auroc']:.3f} / {100 * r['sets'][s]['accepted']:.0f} %" for s in sets]
        rows.append(
            f"| {n} | {r['starts_from']} | {r['train_minutes']:.1f} | {100 * r['test_error']:.2f} % | "
            f"{100 * r['id_reject_rate']:.2f} % | " + " | ".join(cells) + " |"
        )
    return head + "\n".join(rows) + "\n\nCells: AUROC / share accepted at the file's stored threshold.\n"


if __name__ == "__main__":
    main()
