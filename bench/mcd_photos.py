"""MCD's L1 score against plain MSP on mnist5k: accuracy, AUROC vs uniform noise and vs photo crops.

Issue 7's criterion is that MCD's L1 score separates MNIST test digits from natural-image crops at
least as well as a plain model's 1 - max softmax. This trains the plain model of the tests' recipe and
MCD runs with the same pre-training and different fine-tuning (epochs; unlabelled data: the default
synthetic ``noise`` or natural photos), and prints one markdown row per run. The unlabelled photos are
scikit-image images *not* among the evaluation's (``training.ood_sets.PHOTO_NAMES``) plus LFW faces,
so nothing is tuned on the test crops. Offline; ~7 minutes on 2 CPU cores.

    python bench/mcd_photos.py [--runs runs/mcd-photos] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training import data as datasets
from training import mcd, ood_metrics, ood_sets
from training.loop import TrainConfig, build_model, load_checkpoint, train

# Unlabelled natural images for MCD, disjoint from the evaluation's photos.
UNLABELED_PHOTOS = ("motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "ihc.png", "cell.png",
                    "microaneurysms.png")
RUNS = (("noise", 2), ("noise", 5), ("noise", 10), ("photos", 2), ("photos", 6))
SHAPE = ood_sets.InputShape(1, 28, 28)


def unlabeled_photo_folder(root: Path, per_photo: int = 150, seed: int = 1) -> Path:
    """An imagefolder tree (train/ and test/, one class) of crops and faces for ``--unlabeled``."""
    import skimage.data

    folder = root / "unlabeled-photos"
    if (folder / "train").exists():
        return folder
    photos_dir = Path(skimage.data.__file__).parent
    rng = np.random.default_rng(seed)
    images = []
    for name in UNLABELED_PHOTOS:
        images += ood_sets.square_crops(Image.open(photos_dir / name).convert("L"), per_photo, rng, (32, 32))
    for face in np.load(photos_dir / "lfw_subset.npy"):
        images.append(Image.fromarray((face * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR))
    for i, im in enumerate(images):
        target = folder / ("test" if i % 10 == 0 else "train") / "photo"
        target.mkdir(parents=True, exist_ok=True)
        im.save(target / f"{i:04d}.png")
    return folder


def scores(ckpt: Path, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, ood_score) exactly as the exported graph computes them."""
    model, method, _ = build_model(load_checkpoint(ckpt))
    with torch.no_grad():
        p, score, _ = method.outputs(model.eval(), images)
    return p.numpy(), score.numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/mcd-photos"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    started = time.time()
    test = datasets.load("mnist5k", seed=args.seed).test
    id_x = datasets.as_float(test.x)
    sets = {"uniform": torch.rand(1000, *id_x.shape[1:], generator=torch.Generator().manual_seed(args.seed + 3)),
            "photos": ood_sets.photo_crops(SHAPE, 1120, args.seed)}

    def row(label: str, ckpt: Path, seconds: float) -> str:
        p_id, s_id = scores(ckpt, id_x)
        acc = float((p_id.argmax(1) == test.y.numpy()).mean())
        aurocs = [ood_metrics.auroc(-s_id, -scores(ckpt, x)[1]) for x in sets.values()]
        return f"| {label} | {acc:.3f} | {aurocs[0]:.4f} | {aurocs[1]:.4f} | {seconds:.0f} |"

    common = ["--dataset", "mnist5k", "--model", "lenet", "--epochs", "4", "--batch-size", "64", "--lr", "0.05",
              "--seed", str(args.seed), "--device", "cpu", "--no-progress"]
    rows = ["| model | test acc | AUROC vs uniform | AUROC vs photo crops | train s |", "|---|---|---|---|---|"]
    t = time.time()
    plain = train(TrainConfig(dataset="mnist5k", model="lenet", method={"name": "plain"}, epochs=4, batch_size=64,
                              lr=0.05, seed=args.seed, out=str(args.runs / "plain"), progress=False, device="cpu"))
    rows.append(row("plain (1 - max softmax)", plain, time.time() - t))
    pretrain = None
    for unlabeled, epochs in RUNS:
        t = time.time()
        out = args.runs / f"mcd-{unlabeled}-{epochs}"
        source = "noise" if unlabeled == "noise" else f"imagefolder:{unlabeled_photo_folder(args.runs)}"
        # one pre-training shared by every MCD run: only the fine-tuning differs
        init = ["--init-from", str(pretrain)] if pretrain else []
        mcd.main([*common, *init, "--unlabeled", source, "--finetune-epochs", str(epochs), "--out", str(out)])
        pretrain = pretrain or out / "pretrain" / "last.pt"
        rows.append(row(f"MCD (L1), `--unlabeled {unlabeled}`, {epochs} fine-tuning epochs", out / "last.pt",
                        time.time() - t))
        print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))
    print(f"\n{len(test.y)} mnist5k test digits (seed {args.seed}); 1,000 uniform images; 1,120 photo crops "
          f"(`training.ood_sets.photo_crops`); {(time.time() - started) / 60:.1f} min in all")


if __name__ == "__main__":
    main()
