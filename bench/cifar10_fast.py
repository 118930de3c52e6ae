"""The fast CIFAR-10 recipes, measured: one training run, its exported file's test error, what JPEG costs, and what
the network costs to serve.

    python bench/cifar10_fast.py --data-root ../shared/data                       # recipe fast, seed 0
    python bench/cifar10_fast.py --data-root ../shared/data --recipe fast-long
    python bench/cifar10_fast.py --data-root ../shared/data --recipe fast --epochs 10 --name fast-10

1. Trains with the training command a user runs (printed first; ``python -m training.acet --at-frac 0`` is plain
   training), into ``--runs/NAME``; a rerun resumes an unfinished run and skips a finished one.
2. Exports it twice (``training.export``: calibrated on the validation split), as is and with flip TTA in the graph
   (``--tta flip``), and takes each test error from the exported file through onnxruntime, which is what is
   served: ``test_accuracy`` in its metadata. The plain file is the headline; the TTA file costs two passes.
3. The JPEG copy's cost: the same file's error on the test split re-compressed at JPEG quality 50 and 95 (beside
   the ~75 it has): if the error moves with quality, compression is a limit.
4. Serving cost: images/s on one core (onnxruntime, one intra-op thread) at batch 1 and 32, of both files and of
   the bundled resnet_small file.

Writes ``--out/NAME.json``: the command, training minutes, loop images/s, the validation curve (error per epoch),
test errors, and the inference table; and ``--out/curve.png``, every run's curve on one chart.
docs/results/cifar10-fast.md is written from these files.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving.models import resnet_small  # noqa: E402
from modelfile import open_session, read_metadata  # noqa: E402
from training.data import datasets  # noqa: E402
from training.evaluation.scorers import session_outputs  # noqa: E402
from training.run.checkpoint import load as load_checkpoint  # noqa: E402


def train_command(args: argparse.Namespace, run: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "training.acet",
        "--dataset",
        "cifar10",
        "--data-root",
        args.data_root,
        "--no-download",
        "--recipe",
        args.recipe,
        "--at-frac",
        "0",
        "--seed",
        str(args.seed),
        "--out",
        str(run),
        "--no-progress",
    ]
    return cmd + (["--epochs", str(args.epochs)] if args.epochs else []) + args.extra


def recompressed(x: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 images [N, 3, H, W] decoded from JPEG at ``quality`` (4:2:0, PIL's default)."""
    out = []
    for img in x.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def error(sess, split: datasets.Split) -> float:
    probs = session_outputs(sess, split.x).probabilities
    return float((probs.argmax(1) != split.y.numpy()).mean())


def images_per_second(path: Path, batch: int, seconds: float = 4.0) -> float:
    """One intra-op thread, as each serving worker runs: steady-state images/s at this batch size."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, 3, 32, 32), dtype=np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(None, {name: x})
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--recipe", default="fast", help="a training.run.recipes name")
    p.add_argument("--epochs", type=int, default=None, help="the recipe's epochs unless given")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="run and result name (default: the recipe's)")
    p.add_argument("--runs", default="runs/cifar10-fast", help="where the runs' checkpoints go")
    p.add_argument("--out", default="docs/results/cifar10-fast", help="where NAME.json goes")
    p.add_argument("extra", nargs="*", help="more training flags, after --")
    args = p.parse_args()
    name = args.name or args.recipe
    run, out = Path(args.runs) / name, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = train_command(args, run)
    print("$ " + shlex.join(["python", *cmd[1:]]), flush=True)
    done = run / "last.pt"
    if not (done.exists() and _finished(load_checkpoint(done))):
        subprocess.run(cmd + (["--resume"] if done.exists() else []), check=True)
    ckpt = load_checkpoint(done)
    arch = ckpt["config"]["model"]
    files = {tta: run.parent / f"{name}{'' if tta == 'none' else '-' + tta}.onnx" for tta in ("none", "flip")}
    for tta, path in files.items():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training.export",
                "--checkpoint",
                str(done),
                "--out",
                str(path),
                "--name",
                f"cifar10-plain-{arch}",
                "--tta",
                tta,
            ],
            check=True,
        )
    errors = {tta: 1 - read_metadata(path).evaluation.test_accuracy for tta, path in files.items()}
    splits = datasets.load(
        "cifar10", args.data_root, val_fraction=ckpt["config"]["val_fraction"], seed=args.seed, download=False
    )
    sess = open_session(files["none"])
    jpeg = {q: error(sess, datasets.Split(recompressed(splits.test.x, q), splits.test.y)) for q in (50, 95)}
    serving = {
        label: {b: images_per_second(path, b) for b in (1, 32)}
        for label, path in (
            (arch, files["none"]),
            (f"{arch} + flip TTA", files["flip"]),
            ("resnet_small", resnet_small(run.parent)),
        )
    }
    result = {
        "command": shlex.join(["python", *cmd[1:]]),
        "recipe": args.recipe,
        "seed": args.seed,
        "config": ckpt["config"],
        "train_minutes": ckpt["train_seconds"] / 60,
        "loop_images_per_second": ckpt["step"] * ckpt["config"]["batch_size"] / ckpt["train_seconds"],
        "val_error_by_epoch": [1 - h["val_acc"] for h in ckpt.get("history", [])],
        "test_error": errors["none"],
        "test_error_flip_tta": errors["flip"],
        "test_error_recompressed": {"75 (as stored)": errors["none"], **{str(q): e for q, e in jpeg.items()}},
        "serving_images_per_second_one_core": serving,
    }
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{name}: test error {100 * errors['none']:.2f} % (exported file; {100 * errors['flip']:.2f} % with flip "
        f"TTA in the graph) after {result['train_minutes']:.1f} min of training at "
        f"{result['loop_images_per_second']:.0f} img/s; test split re-compressed at JPEG quality 50 / 95: "
        f"{100 * jpeg[50]:.2f} / {100 * jpeg[95]:.2f} %"
    )
    for label, rates in serving.items():
        print(f"  serving {label}: {rates[1]:.0f} img/s at batch 1, {rates[32]:.0f} at batch 32 (one core)")
    print(f"curve: {plot(out)}")


def plot(out: Path) -> Path:
    """Every result in ``out`` on one chart: validation error after each epoch (the run's own 5,000 held-out
    images), and the exported file's test error at the end of each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        curve = 100 * np.array(r["val_error_by_epoch"])
        epochs = np.arange(1, len(curve) + 1)
        (line,) = ax.plot(
            epochs,
            curve,
            label=f"{path.stem}: {r['config']['model']}, {len(curve)} epochs, {r['train_minutes']:.0f} min",
        )
        ax.plot([len(curve)], [100 * r["test_error"]], "o", color=line.get_color())
    ax.set(
        xlabel="epoch",
        ylabel="error (%)",
        ylim=(0, 40),
        title="CIFAR-10 (JPEG copy), seed 0: validation error per epoch; dot = test error of the exported file",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    return out / "curve.png"


def _finished(ckpt: dict) -> bool:
    cfg = ckpt["config"]
    per_epoch = round(50_000 * (1 - cfg["val_fraction"])) // cfg["batch_size"]
    return ckpt["step"] >= cfg["epochs"] * per_epoch or (
        cfg["max_steps"] is not None and ckpt["step"] >= cfg["max_steps"]
    )


if __name__ == "__main__":
    main()
