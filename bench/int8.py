"""int8 model files against their fp32 sources, and recalibration on shifted images.

    python bench/int8.py --data-root ../shared/data      # writes docs/results/int8.md and int8.json

For each bundled ``models/NAME.onnx`` with an ``NAME-int8.onnx`` beside it (``make models`` writes both):

- speed: onnxruntime on one intra-op thread pinned to core 0 (``bench.serving.rawcost``, as the service runs a
  model per core), us per image at batch 1, 8 and 32, fp32 and int8 alternately, ``--rounds`` times each, median;
- quality: what each file's card measured on its own graph at its own stored threshold (the exporter evaluates
  the file it wrote, so the int8 rows are the int8 graph's): test error, ID reject rate, AUROC and accepted share
  per OOD set, with the targets' tolerances (TARGETS);
- recalibration: ``--shift-images`` CIFAR-10 test images (seeded) recompressed as JPEG quality 30 and, separately,
  blurred (Gaussian, radius 0.7), given to ``python -m modelfile recalibrate`` (the command's own seeded 30 %
  hold-out measures the old and the new threshold), for the photo model's files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelfile import ModelMetadata, read_metadata  # noqa: E402
from modelfile.recalibrate import recalibrate  # noqa: E402

TARGETS = {"speed_b32": 2.0, "speed_b1": 1.5, "auroc": 0.005, "error_pts": 0.3, "reject_pts": 1.5}
SHIFTS = {"jpeg-q30": lambda im: _jpeg(im, 30), "blur-0.7": lambda im: im.filter(ImageFilter.GaussianBlur(0.7))}


def pairs(models: Path) -> list[tuple[Path, Path]]:
    return [
        (p, p.with_name(f"{p.stem}-int8.onnx"))
        for p in sorted(models.glob("*.onnx"))
        if not p.stem.endswith("-int8") and p.with_name(f"{p.stem}-int8.onnx").is_file()
    ]


def raw_speed(model: Path, image: Path) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "bench.serving.rawcost", str(model), str(image)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def speeds(pair: tuple[Path, Path], image: Path, rounds: int) -> dict[str, dict[str, float]]:
    """Median us per image of each file, the two measured alternately so that drift hits both alike."""
    runs: dict[str, list[dict]] = {"fp32": [], "int8": []}
    for _ in range(rounds):
        for kind, path in zip(runs, pair, strict=True):
            runs[kind].append(raw_speed(path, image))
    return {kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for kind, rs in runs.items()}


def quality(fp32: ModelMetadata, int8: ModelMetadata) -> dict:
    a, b = fp32.evaluation, int8.evaluation
    sets = {
        name: {"fp32": a.ood[name].model_dump(), "int8": b.ood[name].model_dump()} for name in a.ood if name in b.ood
    }
    return {
        "test_error": [1 - a.test_accuracy, 1 - b.test_accuracy],
        "id_reject_rate": [a.id_reject_rate, b.id_reject_rate],
        "threshold": [fp32.calibration.threshold, int8.calibration.threshold],
        "sets": sets,
    }


def cifar10_test_images(data_root: Path, n: int, seed: int) -> list[Image.Image]:
    """``n`` seeded CIFAR-10 test images from ``cifar10-jpg.zip``."""
    path = data_root / "cifar10-jpg.zip"
    if not path.is_file():
        sys.exit(f"error: {path}: no such file (--data-root must hold cifar10-jpg.zip)")
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.startswith("test/") and n.endswith(".jpg"))
        chosen = np.random.default_rng(seed).choice(len(names), n, replace=False)
        return [Image.open(io.BytesIO(z.read(names[i]))).convert("RGB") for i in sorted(chosen)]


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def shifted_folder(images: list[Image.Image], shift: str, folder: Path) -> Path:
    """The images with ``shift`` applied, as lossless PNGs (what is measured is the shift alone)."""
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        SHIFTS[shift](im).save(folder / f"{i:05d}.png")
    return folder


def recalibrations(models: list[Path], images: list[Image.Image], workdir: Path) -> list[dict]:
    rows = []
    for shift in SHIFTS:
        folder = shifted_folder(images, shift, workdir / shift)
        for model in models:
            t = time.perf_counter()
            result = recalibrate(model, folder, workdir / f"{model.stem}-{shift}.onnx")
            rows.append(
                {
                    "model": model.name,
                    "shift": shift,
                    "threshold": result.meta.calibration.threshold,
                    **result.meta.recalibration.model_dump(exclude={"created"}),
                    "seconds": time.perf_counter() - t,
                }
            )
    return rows


def markdown(run: dict) -> str:
    lines = [
        "# int8 model files and recalibration",
        "",
        f"`{run['command']}` ({run['minutes']:.1f} min, {run['started']}; load average at start "
        f"{run['load_start']:.2f}). Targets: int8 >= {TARGETS['speed_b32']}x fp32 images/s at batch 32 and "
        f">= {TARGETS['speed_b1']}x at batch 1 on one core; AUROC within {TARGETS['auroc']}, test error within "
        f"{TARGETS['error_pts']} points, ID reject rate within {TARGETS['reject_pts']} points of 5 % at the "
        "int8 file's own threshold; recalibrated held-out reject rate within 1.5 points of 5 %.",
        "",
    ]
    for model in run["models"]:
        lines += speed_section(model) + quality_section(model)
    lines += recalibration_section(run["recalibration"])
    return "\n".join(lines) + "\n"


def speed_section(model: dict) -> list[str]:
    s = model["speed"]
    lines = [
        f"## {model['fp32']} and {model['int8']}",
        "",
        "| us per image (1 thread, core 0) | fp32 | int8 | int8 speed-up | target |",
        "|---|---|---|---|---|",
    ]
    for b in (1, 8, 32):
        key = f"ort_us_per_image_b{b}"
        ratio = s["fp32"][key] / s["int8"][key]
        target = {1: TARGETS["speed_b1"], 32: TARGETS["speed_b32"]}.get(b)
        verdict = "" if target is None else f">= {target}x: {'met' if ratio >= target else 'not met'}"
        lines.append(f"| batch {b} | {s['fp32'][key]:.0f} | {s['int8'][key]:.0f} | {ratio:.2f}x | {verdict} |")
    return [*lines, ""]


def quality_section(model: dict) -> list[str]:
    q = model["quality"]
    err, rej = q["test_error"], q["id_reject_rate"]
    lines = [
        "| measured on each file's own graph | fp32 | int8 | difference | within tolerance |",
        "|---|---|---|---|---|",
        f"| test error | {100 * err[0]:.2f} % | {100 * err[1]:.2f} % | {100 * (err[1] - err[0]):+.2f} pts | "
        f"{_yes(abs(100 * (err[1] - err[0])) <= TARGETS['error_pts'])} |",
        f"| ID reject rate at the file's threshold | {100 * rej[0]:.2f} % | {100 * rej[1]:.2f} % | | "
        f"{_yes(abs(100 * rej[1] - 5) <= TARGETS['reject_pts'])} (int8 vs 5 %) |",
    ]
    for name, r in q["sets"].items():
        d = r["int8"]["auroc"] - r["fp32"]["auroc"]
        lines.append(
            f"| AUROC {name} (accepted) | {r['fp32']['auroc']:.4f} ({_pct(r['fp32']['accepted'])}) | "
            f"{r['int8']['auroc']:.4f} ({_pct(r['int8']['accepted'])}) | {d:+.4f} | "
            f"{_yes(abs(d) <= TARGETS['auroc'])} |"
        )
    return [*lines, ""]


def recalibration_section(rows: list[dict]) -> list[str]:
    lines = [
        "## Recalibration on shifted CIFAR-10 test images",
        "",
        "`python -m modelfile recalibrate` on each shifted folder; reject rates on the command's held-out 30 %.",
        "",
        "| model | shift | images (held out) | threshold before -> after | held-out rejected before | "
        "after | within 1.5 pts of 5 % | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['shift']} | {r['images']} ({r['held_out']}) | "
            f"{r['previous_threshold']:.4g} -> {r['threshold']:.4g} | "
            f"{_pct(r['held_out_reject_rate_before'])} | {_pct(r['held_out_reject_rate_after'])} | "
            f"{_yes(abs(100 * r['held_out_reject_rate_after'] - 5) <= 1.5)} | {r['seconds']:.0f} |"
        )
    return [*lines, ""]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def upload_image(meta: ModelMetadata, data_root: Path) -> Image.Image:
    """What a client would send: a CIFAR-10 test image to a colour model, a held-out digit to a grayscale one."""
    if meta.input.channels == 3:
        return cifar10_test_images(data_root, 1, 0)[0]
    return Image.open(sorted((ROOT / "tests" / "data" / "mnist-t10k-heldout").glob("*.png"))[0])


def measure(args: argparse.Namespace, workdir: Path) -> dict:
    found = pairs(args.models)
    if not found:
        sys.exit(f"error: no NAME.onnx with a NAME-int8.onnx beside it in {args.models} (make models writes both)")
    out = []
    for fp32, int8 in found:
        upload = workdir / f"{fp32.stem}.png"
        upload_image(read_metadata(fp32), args.data_root).save(upload)
        out.append(
            {
                "fp32": fp32.name,
                "int8": int8.name,
                "speed": speeds((fp32, int8), upload, args.rounds),
                "quality": quality(read_metadata(fp32), read_metadata(int8)),
            }
        )
    photo = [p for pair in found for p in pair if read_metadata(p).input.channels == 3]
    images = cifar10_test_images(args.data_root, args.shift_images, args.seed)
    return {"models": out, "recalibration": recalibrations(photo, images, workdir)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, default=Path("../shared/data"), help="holds cifar10-jpg.zip")
    p.add_argument("--models", type=Path, default=ROOT / "models", help="folder of NAME.onnx + NAME-int8.onnx")
    p.add_argument("--rounds", type=int, default=3, help="speed measurements per file (median)")
    p.add_argument("--shift-images", type=int, default=3000, help="CIFAR-10 test images per shifted folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "int8.md")
    args = p.parse_args()
    started, load, t = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()[0], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        run = measure(args, Path(tmp))
    run |= {
        "command": " ".join(["python", *sys.argv]),
        "started": started,
        "load_start": load,
        "minutes": (time.perf_counter() - t) / 60,
    }
    args.out.with_suffix(".json").write_text(json.dumps(run, indent=1))
    args.out.write_text(markdown(run))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
