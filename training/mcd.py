"""``python -m training.mcd``: MCD (two heads, discrepancy fine-tuning, L1 score), see docs/mcd.md.

Two runs of the shared loop: pre-training (cross-entropy on both heads; ``--epochs``, ``--lr`` and the
usual step schedule) into ``OUT/pretrain/``, then fine-tuning (steps A and B on every batch, SGD
``--finetune-lr`` 0.01, momentum 0.9, constant) into ``OUT/``, which holds the final checkpoint and
is what ``--export`` exports. ``--init-from CKPT`` skips pre-training and fine-tunes CKPT (an MCD
checkpoint); ``--resume`` continues whichever phase was interrupted.

    python -m training.mcd --dataset svhn --unlabeled noise
    python -m training.mcd --dataset mnist5k --model lenet --epochs 4 --batch-size 64 --finetune-epochs 1
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import cli
from . import data as datasets
from .loop import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    p = cli.parser("Train a two-head classifier with MCD (Maximum Classifier Discrepancy, Yu & Aizawa 2019).")
    g = p.add_argument_group("MCD")
    g.add_argument("--unlabeled", default="noise",
                   help="unlabelled data for the discrepancy loss: 'noise' (blurred uniform + pixel-permuted "
                        "training images), a --dataset name or imagefolder:PATH (its training images, labels "
                        "ignored). Never an OOD set you evaluate on")
    g.add_argument("--margin", type=float, default=1.2, help="discrepancy margin m")
    g.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning epochs (steps A and B per batch)")
    g.add_argument("--finetune-max-steps", type=int, default=None, help="stop fine-tuning after this many batches")
    g.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tuning SGD learning rate (constant)")
    args = p.parse_args(argv)

    run_name = f"mcd-{args.model}-{args.dataset.replace(':', '_').replace('/', '_')}"
    out = Path(args.out or f"runs/{run_name}")
    method = {"name": "mcd", "unlabeled": args.unlabeled, "margin": args.margin, "data_root": args.data_root}
    common = dict(
        dataset=args.dataset, data_root=args.data_root, model=args.model, batch_size=args.batch_size,
        momentum=args.momentum, weight_decay=args.weight_decay, val_fraction=args.val_fraction, seed=args.seed,
        device=args.device, amp=args.amp, resume=args.resume, download=args.download, progress=args.progress,
    )
    pretrain = TrainConfig(**common, method={**method, "phase": "pretrain"}, epochs=args.epochs,
                           max_steps=args.max_steps, lr=args.lr or cli.DEFAULT_LR[args.model],
                           out=str(out / "pretrain"))
    finetune = TrainConfig(**common, method={**method, "phase": "finetune"}, epochs=args.finetune_epochs,
                           max_steps=args.finetune_max_steps, lr=args.finetune_lr, lr_milestones=(), out=str(out),
                           init_from=args.init_from or str(out / "pretrain" / "last.pt"), export=args.export)
    try:
        if args.unlabeled != "noise" and os.environ.get("RANK", "0") == "0":
            # fail (or download) now, not after pre-training; other ranks read it once rank 0 has it
            datasets.load(args.unlabeled, args.data_root, val_fraction=0.0, download=args.download)
        if not args.init_from and not (args.resume and (out / "last.pt").exists()):
            train(pretrain)
        train(finetune)
    except datasets.DatasetUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
